//! Function resources: CreateFunction, GetFunction, GetFunctionConfiguration,
//! ListFunctions, UpdateFunctionCode, UpdateFunctionConfiguration,
//! DeleteFunction, and the code download emberd's `Code.Location` points at.

use serde_json::{json, Value};

use super::wire::{self, CreateFunctionIn, EnvironmentIn, UpdateCodeIn, UpdateConfigIn};
use super::{function_name, versions, ApiError, App, Reply, Req};
use crate::catalog::{layer_sizes, resolve};
use crate::functions::{NewFunction, Package};
use crate::linux;
use crate::store::{FunctionConfig, FunctionRecord, SnapStartApplyOn, StoreError};
use crate::util::{scoped_name, split_scoped};

fn check_runtime(app: &App, runtime: &str) -> Result<(), ApiError> {
    if runtime == "wasm" {
        return Ok(());
    }
    if linux::is_linux_runtime(runtime) {
        // Some guest must run it; python3.11's ZIP is checked for native
        // extensions when it is stored (`functions::code`).
        return app
            .functions
            .caps()
            .guest(runtime, &[])
            .map(|_| ())
            .map_err(|e| ApiError::InvalidParameter(e.to_string()));
    }
    let known: Vec<&str> = linux::LINUX_RUNTIMES.iter().map(|(r, _)| *r).collect();
    Err(ApiError::InvalidParameter(format!(
        "Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [wasm, {}]",
        known.join(", ")
    )))
}

fn check_limits(cfg: &FunctionConfig) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::InvalidParameter(m));
    if !(128..=10240).contains(&cfg.memory_size) {
        return bad(format!(
            "MemorySize {} is outside 128..10240 MB",
            cfg.memory_size
        ));
    }
    if !(1..=900).contains(&cfg.timeout) {
        return bad(format!("Timeout {} is outside 1..900 seconds", cfg.timeout));
    }
    if !(512..=10240).contains(&cfg.ephemeral_storage) {
        return bad(format!(
            "EphemeralStorage {} is outside 512..10240 MB",
            cfg.ephemeral_storage
        ));
    }
    if cfg.description.len() > 256 || cfg.handler.len() > 128 || cfg.role.len() > 2048 {
        return bad("Description, Handler or Role is too long".into());
    }
    let env_bytes: usize = cfg.environment.iter().map(|(k, v)| k.len() + v.len()).sum();
    if env_bytes > 4096 {
        return bad("Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit.".into());
    }
    for k in cfg.environment.keys() {
        let ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return bad(format!("Environment variable name {k:?} is invalid"));
        }
    }
    if cfg.layers.len() > 5 {
        return bad("A function can have at most 5 layers".into());
    }
    Ok(())
}

/// Layers a configuration newly names (not in `already`) must exist now; a
/// layer version deleted since a function named it stays usable by that
/// function (it is retired, see `store::retired`), but is never attached anew.
fn check_new_layers(app: &App, arns: &[String], already: &[String]) -> Result<(), ApiError> {
    for arn in arns.iter().filter(|a| !already.contains(a)) {
        let found = linux::parse_layer_arn(arn).is_some_and(|(acct, name, v)| {
            app.functions
                .store()
                .get_layer(&scoped_name(acct, name), v)
                .is_ok()
        });
        if !found {
            return Err(ApiError::InvalidParameter(format!(
                "Layer version {arn} does not exist."
            )));
        }
    }
    Ok(())
}

/// A function may only use layers of its own account.
fn own_layers(arns: &[String], account: &str) -> Result<(), ApiError> {
    match arns
        .iter()
        .find(|arn| arn.split(':').nth(4).is_some_and(|a| a != account))
    {
        Some(arn) => Err(ApiError::InvalidParameter(format!(
            "Layer version {arn} does not exist."
        ))),
        None => Ok(()),
    }
}

fn env_vars(e: Option<EnvironmentIn>) -> std::collections::BTreeMap<String, String> {
    e.and_then(|e| e.variables).unwrap_or_default()
}

/// `SnapStart.ApplyOn` from a request (absent: `None`).
fn snap_start(input: Option<&wire::SnapStartIn>) -> Result<SnapStartApplyOn, ApiError> {
    input
        .map(|s| s.apply_on())
        .transpose()
        .map(|a| a.unwrap_or_default())
        .map_err(ApiError::InvalidParameter)
}

/// SnapStart snapshots kernel-less environments only (runtime wasm, and
/// python3.11 where the kernel-less guest runs it): Linux guests' device
/// and interrupt state is not in ember-vmm's snapshots yet. `native` are
/// the function code's native extensions (they send python3.11 to Linux).
fn check_snap_start(app: &App, cfg: &FunctionConfig, native: &[String]) -> Result<(), ApiError> {
    if cfg.snap_start != SnapStartApplyOn::PublishedVersions || cfg.runtime == "wasm" {
        return Ok(());
    }
    match app.functions.caps().guest(&cfg.runtime, native) {
        Ok(crate::python::Guest::Wasm) => Ok(()),
        _ => Err(ApiError::InvalidParameter(format!(
            "SnapStart is not supported for runtime {} on this host: it runs in a Linux guest, and ember snapshots kernel-less guests only (runtime wasm, and python3.11 on the kernel-less guest)",
            cfg.runtime
        ))),
    }
}

fn check_arch(a: &Option<Vec<String>>, package_type: Option<&str>) -> Result<(), ApiError> {
    if a.as_ref().is_some_and(|a| a.iter().any(|x| x != "x86_64")) {
        return Err(ApiError::InvalidParameter(
            "Only the x86_64 architecture is available on this host".into(),
        ));
    }
    if package_type.is_some_and(|p| p != "Zip") {
        return Err(ApiError::InvalidParameter(
            "Only PackageType Zip is supported".into(),
        ));
    }
    Ok(())
}

pub fn create(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let input: CreateFunctionIn = req.json()?;
    let (name, q) = function_name(&input.function_name, req.account())?;
    if q.is_some() {
        return Err(ApiError::InvalidParameter(
            "FunctionName must not carry a qualifier".into(),
        ));
    }
    check_arch(&input.architectures, input.package_type.as_deref())?;
    let config = FunctionConfig {
        runtime: input.runtime.unwrap_or_else(|| "wasm".into()),
        role: input.role.unwrap_or_default(),
        handler: input.handler.unwrap_or_else(|| "function.handler".into()),
        description: input.description.unwrap_or_default(),
        timeout: input.timeout.unwrap_or(3),
        memory_size: input.memory_size.unwrap_or(128),
        environment: env_vars(input.environment),
        ephemeral_storage: input.ephemeral_storage.map(|e| e.size).unwrap_or(512),
        layers: input.layers.unwrap_or_default(),
        snap_start: snap_start(input.snap_start.as_ref())?,
    };
    check_runtime(app, &config.runtime)?;
    check_snap_start(app, &config, &[])?;
    check_limits(&config)?;
    own_layers(&config.layers, req.account())?;
    let sizes = layer_sizes(app.functions.store(), &config.layers)?;
    check_new_layers(app, &config.layers, &[])?;
    let tags = input.tags.unwrap_or_default();
    super::tags::check(&tags)?;
    let package = Package {
        zip_b64: input.code.zip_file.as_deref(),
        other_source: input.code.s3_bucket.is_some() || input.code.image_uri.is_some(),
    };
    let new = NewFunction { name, config, tags };
    let (rec, published) =
        app.functions
            .create(req.account(), new, package, input.publish.unwrap_or(false))?;
    let mut body = match published {
        Some(v) => wire::version_configuration(&rec.name, &v, &sizes),
        None => wire::latest_configuration(&rec, &sizes),
    };
    versions::with_guest(app, &mut body, &rec.config.runtime, &rec.code.native);
    Ok(Reply::json(201, body))
}

pub fn get(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let qualifier = req.q("Qualifier").map(str::to_string).or(q);
    let r = resolve(app.functions.store(), &name, qualifier.as_deref())?;
    let f = app.functions.store().get_function(&name)?;
    let location = format!(
        "{}/ember/code/{}/{}",
        app.base_url,
        split_scoped(&name).1,
        r.version
    );
    let mut body = json!({
        "Configuration": versions::configuration(app, &r),
        "Code": {"RepositoryType": "S3", "Location": location},
        "Tags": f.tags,
    });
    if let Some(n) = f.reserved_concurrency {
        body["Concurrency"] = json!({"ReservedConcurrentExecutions": n});
    }
    Ok(Reply::json(200, body))
}

pub fn get_configuration(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    let qualifier = req.q("Qualifier").map(str::to_string).or(q);
    let r = resolve(app.functions.store(), &name, qualifier.as_deref())?;
    Ok(Reply::json(200, versions::configuration(app, &r)))
}

/// One page of `account`'s functions after `marker` (a name as the client
/// sees it), and the marker of the next page if there is one. The store
/// holds every account's functions in one table, so its pages are filtered.
fn list_own(
    app: &App,
    account: &str,
    marker: Option<&str>,
    max: usize,
) -> Result<(Vec<FunctionRecord>, Option<String>), ApiError> {
    let mut from = marker.map(|m| scoped_name(account, m));
    let mut own = Vec::new();
    loop {
        let (page, more) = app
            .functions
            .store()
            .list_functions(from.as_deref(), max + 1)?;
        own.extend(
            page.into_iter()
                .filter(|f| split_scoped(&f.name).0 == account),
        );
        if own.len() > max || more.is_none() {
            break;
        }
        from = more;
    }
    if own.len() <= max {
        return Ok((own, None));
    }
    own.truncate(max);
    let next = own.last().map(|f| split_scoped(&f.name).1.to_string());
    Ok((own, next))
}

pub fn list(app: &App, req: &Req) -> Result<Reply, ApiError> {
    let max = req.max_items()?;
    let all_versions = req.q("FunctionVersion") == Some("ALL");
    let (funcs, next) = list_own(app, req.account(), req.q("Marker"), max)?;
    let mut out: Vec<Value> = Vec::new();
    for f in &funcs {
        out.push(wire::latest_configuration(
            f,
            &layer_sizes(app.functions.store(), &f.config.layers).unwrap_or_default(),
        ));
        if all_versions {
            for v in app.functions.store().list_versions(&f.name)? {
                out.push(wire::version_configuration(
                    &f.name,
                    &v,
                    &layer_sizes(app.functions.store(), &v.config.layers).unwrap_or_default(),
                ));
            }
        }
    }
    let mut body = json!({ "Functions": out });
    if let Some(m) = next {
        body["NextMarker"] = Value::from(m);
    }
    Ok(Reply::json(200, body))
}

fn check_revision(expected: Option<&str>, current: &str) -> Result<(), ApiError> {
    match expected {
        Some(r) if r != current => Err(ApiError::PreconditionFailed("The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into())),
        _ => Ok(()),
    }
}

pub fn update_code(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: UpdateCodeIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    check_arch(&input.architectures, None)?;
    let current = app.functions.store().get_function(&name)?;
    check_revision(input.revision_id.as_deref(), &current.revision_id)?;
    let other = input.s3_bucket.is_some() || input.s3_key.is_some() || input.image_uri.is_some();
    if input.dry_run == Some(true) {
        app.functions
            .check_code(&current, input.zip_file.as_deref())?;
        return Ok(Reply::json(
            200,
            wire::latest_configuration(
                &current,
                &layer_sizes(app.functions.store(), &current.config.layers)?,
            ),
        ));
    }
    let package = Package {
        zip_b64: input.zip_file.as_deref(),
        other_source: other,
    };
    let (rec, published) = app.functions.replace_code(
        req.account(),
        &current,
        input.revision_id.clone(),
        package,
        input.publish == Some(true),
    )?;
    let sizes = layer_sizes(app.functions.store(), &rec.config.layers)?;
    if let Some(v) = published {
        return Ok(Reply::json(
            200,
            wire::version_configuration(&name, &v, &sizes),
        ));
    }
    Ok(Reply::json(200, wire::latest_configuration(&rec, &sizes)))
}

pub fn update_configuration(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let input: UpdateConfigIn = req.json()?;
    let (name, _) = function_name(raw, req.account())?;
    let current = app.functions.store().get_function(&name)?;
    check_revision(input.revision_id.as_deref(), &current.revision_id)?;
    let mut cfg = current.config.clone();
    if let Some(v) = input.runtime {
        check_runtime(app, &v)?;
        if linux::is_linux_runtime(&v) != linux::is_linux_runtime(&cfg.runtime) {
            return Err(ApiError::InvalidParameter(format!(
                "Runtime {v} cannot replace {}: wasm functions store the module and Linux functions the whole ZIP, so the stored code would not fit. Create a new function with Runtime {v}.",
                cfg.runtime
            )));
        }
        cfg.runtime = v;
    }
    if let Some(v) = input.role {
        cfg.role = v;
    }
    if let Some(v) = input.handler {
        cfg.handler = v;
    }
    if let Some(v) = input.description {
        cfg.description = v;
    }
    if let Some(v) = input.timeout {
        cfg.timeout = v;
    }
    if let Some(v) = input.memory_size {
        cfg.memory_size = v;
    }
    if let Some(v) = input.environment {
        cfg.environment = env_vars(Some(v));
    }
    if let Some(v) = input.ephemeral_storage {
        cfg.ephemeral_storage = v.size;
    }
    if let Some(v) = input.layers {
        cfg.layers = v;
    }
    if let Some(v) = &input.snap_start {
        cfg.snap_start = snap_start(Some(v))?;
    }
    check_snap_start(app, &cfg, &current.code.native)?;
    check_limits(&cfg)?;
    own_layers(&cfg.layers, req.account())?;
    let sizes = layer_sizes(app.functions.store(), &cfg.layers)?;
    check_new_layers(app, &cfg.layers, &current.config.layers)?;
    let rec = app.functions.reconfigure(&current, cfg)?;
    Ok(Reply::json(200, wire::latest_configuration(&rec, &sizes)))
}

pub fn delete(app: &App, req: &Req, raw: &str) -> Result<Reply, ApiError> {
    let (name, q) = function_name(raw, req.account())?;
    match req.q("Qualifier").map(str::to_string).or(q) {
        None => app.functions.delete(&name)?,
        Some(q) if q == "$LATEST" => {
            return Err(ApiError::InvalidParameter(
                "$LATEST version cannot be deleted without deleting the function.".into(),
            ));
        }
        Some(q) => {
            let v = q.parse::<u64>().map_err(|_| {
                ApiError::InvalidParameter(format!("Qualifier {q} is not a version number"))
            })?;
            app.functions.delete_version(&name, v)?;
        }
    }
    Ok(Reply::empty(204))
}

/// `GET /ember/code/{function}/{version}`: the stored module, or the ZIP of
/// a Linux function (verified).
pub fn download(app: &App, req: &Req, raw: &str, version: &str) -> Result<Reply, ApiError> {
    let (name, _) = function_name(raw, req.account())?;
    let r = resolve(app.functions.store(), &name, Some(version))?;
    let module = app
        .functions
        .store()
        .read_blob(&r.code.blob)
        .map_err(StoreError::from)?;
    Ok(Reply {
        status: 200,
        headers: vec![(
            "content-type",
            if linux::is_linux_runtime(&r.config.runtime) {
                "application/zip"
            } else {
                "application/wasm"
            }
            .into(),
        )],
        body: module.into(),
        json: false,
    })
}
