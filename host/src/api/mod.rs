//! The Lambda REST API: parses HTTP requests into operations and dispatches
//! them. Control-plane handlers are synchronous (they commit to the store,
//! which fsyncs) and run on blocking threads; `Invoke` is async so an
//! environment can start while the payload is still arriving.

mod account;
pub mod audit;
pub mod error;
pub mod events;
mod fleet;
pub mod forward;
mod function_settings;
mod functions;
pub mod invoke;
mod layers;
pub mod logs;
mod metrics;
mod paging;
pub mod policy;
pub mod provisioned;
pub mod query;
mod redact;
mod stream;
mod tags;
pub mod url_calls;
mod urls;
pub mod versions;
pub mod wire;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

pub use error::ApiError;
pub use query::Query;

use crate::auth::Caller;

/// The response header carrying an invocation's (or any request's) id.
pub const REQUEST_ID: &str = "x-amzn-RequestId";

/// Largest control-plane request body (a 50 MB ZIP, base64-encoded, plus JSON).
pub const MAX_CONTROL_BODY: usize = 70 * 1024 * 1024;

/// The services HTTP requests reach (each owns its state and operations).
pub struct App {
    /// Functions, versions, aliases, concurrency: operations and reads.
    pub functions: Arc<crate::functions::Functions>,
    /// Runs invocations (HTTP `Invoke` and the event workers).
    pub invoker: Arc<crate::invoker::Invoker>,
    /// The asynchronous invocation queue.
    pub events: Arc<crate::events::Events>,
    /// Public base URL (code `Location`s point here).
    pub base_url: String,
    /// Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Verifies every request's signature (see [`crate::auth`]).
    pub auth: Arc<crate::auth::Authenticator>,
    /// Function log streams on disk (`GET /ember/logs/{function}`).
    pub logs: Arc<crate::logs::Logs>,
    /// The audit trail every control-plane call is recorded in (None in
    /// in-process tests that do not exercise it).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// This host's fleet membership (None: a single host, no `--cluster`).
    pub fleet: Option<Arc<crate::fleet::Members>>,
    /// Function URLs: where they are served, which function each names.
    pub urls: Arc<crate::urls::Urls>,
}

/// A parsed request: method, percent-decoded path segments, query, headers.
pub struct Req {
    pub method: hyper::Method,
    pub segs: Vec<String>,
    pub query: Query,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// Who sent it (see [`crate::auth::Caller`]).
    pub caller: Caller,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `MaxItems` (1..=10000, default 50) for list operations.
    pub fn max_items(&self) -> Result<usize, ApiError> {
        match self.q("MaxItems") {
            None => Ok(50),
            Some(m) => m
                .parse::<usize>()
                .ok()
                .filter(|m| (1..=10_000).contains(m))
                .ok_or_else(|| ApiError::InvalidParameter("MaxItems must be 1..10000".into())),
        }
    }

    /// The caller's account: whose functions and layers this request sees.
    pub fn account(&self) -> &str {
        self.caller.account()
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }

    /// The body as a strict JSON request type (`{}` when empty).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.is_empty() {
            b"{}"
        } else {
            &self.body
        };
        Ok(serde_json::from_slice(body)?)
    }
}

/// A successful response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub json: bool,
}

impl Reply {
    pub fn json(status: u16, v: Value) -> Self {
        Reply {
            status,
            headers: vec![],
            body: Bytes::from(v.to_string()),
            json: true,
        }
    }

    pub fn empty(status: u16) -> Self {
        Reply {
            status,
            headers: vec![],
            body: Bytes::new(),
            json: false,
        }
    }
}

/// The operations, from method + path. `Invoke` is routed separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    ListFunctions,
    CreateFunction,
    GetFunction(String),
    DeleteFunction(String),
    GetConfiguration(String),
    UpdateConfiguration(String),
    UpdateCode(String),
    ListVersions(String),
    PublishVersion(String),
    ListAliases(String),
    CreateAlias(String),
    GetAlias(String, String),
    UpdateAlias(String, String),
    DeleteAlias(String, String),
    /// `Invoke` (2015-03-31) or `InvokeWithResponseStream` (2021-11-15).
    Invoke(String, invoke::Answer),
    PutConcurrency(String),
    GetConcurrency(String),
    DeleteConcurrency(String),
    PutProvisioned(String),
    GetProvisioned(String),
    DeleteProvisioned(String),
    PublishLayer(String),
    ListLayerVersions(String),
    GetLayerVersion(String, String),
    DeleteLayerVersion(String, String),
    GetAccountSettings,
    AddPermission(String),
    RemovePermission(String, String),
    GetPolicy(String),
    /// ListLayers, or GetLayerVersionByArn with `?find=LayerVersion`.
    ListLayers,
    TagResource(String),
    UntagResource(String),
    ListTags(String),
    GetFunctionCodeSigningConfig(String),
    PutFunctionCodeSigningConfig(String),
    DeleteFunctionCodeSigningConfig(String),
    ListCodeSigningConfigs,
    GetRuntimeManagementConfig(String),
    PutRuntimeManagementConfig(String),
    CreateFunctionUrlConfig(String),
    GetFunctionUrlConfig(String),
    UpdateFunctionUrlConfig(String),
    DeleteFunctionUrlConfig(String),
    ListFunctionUrlConfigs(String),
    /// emberd's own: `GET /ember/environments` (for `ember env list`).
    ListEnvironments,
    /// emberd's own: `GET /ember/code/{function}/{version}` (code download).
    GetCode(String, String),
    /// Prometheus text exposition: `GET /metrics`.
    Metrics,
    /// emberd's own: `GET /ember/logs/{function}` (for `ember logs`).
    GetLogs(String),
    /// emberd's own: `GET /ember/fleet` (the live hosts, for `ember fleet`).
    FleetStatus,
    /// Event invoke configs, destination queues, the async queue's state.
    Events(crate::api::events::Route),
}

pub fn route(method: &hyper::Method, segs: &[String]) -> Result<Route, ApiError> {
    use hyper::Method as M;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let f = |i: usize| s[i].to_string();
    let r = match (method, s.as_slice()) {
        (&M::GET, ["2015-03-31", "functions"]) => Route::ListFunctions,
        (&M::POST, ["2015-03-31", "functions"]) => Route::CreateFunction,
        (&M::GET, ["2015-03-31", "functions", _]) => Route::GetFunction(f(2)),
        (&M::DELETE, ["2015-03-31", "functions", _]) => Route::DeleteFunction(f(2)),
        (&M::GET, ["2015-03-31", "functions", _, "configuration"]) => Route::GetConfiguration(f(2)),
        (&M::PUT, ["2015-03-31", "functions", _, "configuration"]) => {
            Route::UpdateConfiguration(f(2))
        }
        (&M::PUT, ["2015-03-31", "functions", _, "code"]) => Route::UpdateCode(f(2)),
        (&M::GET, ["2015-03-31", "functions", _, "versions"]) => Route::ListVersions(f(2)),
        (&M::POST, ["2015-03-31", "functions", _, "versions"]) => Route::PublishVersion(f(2)),
        (&M::GET, ["2015-03-31", "functions", _, "aliases"]) => Route::ListAliases(f(2)),
        (&M::POST, ["2015-03-31", "functions", _, "aliases"]) => Route::CreateAlias(f(2)),
        (&M::GET, ["2015-03-31", "functions", _, "aliases", _]) => Route::GetAlias(f(2), f(4)),
        (&M::PUT, ["2015-03-31", "functions", _, "aliases", _]) => Route::UpdateAlias(f(2), f(4)),
        (&M::DELETE, ["2015-03-31", "functions", _, "aliases", _]) => {
            Route::DeleteAlias(f(2), f(4))
        }
        (&M::POST, ["2015-03-31", "functions", _, "invocations"]) => {
            Route::Invoke(f(2), invoke::Answer::Whole)
        }
        (&M::POST, ["2021-11-15", "functions", _, "response-streaming-invocations"]) => {
            Route::Invoke(f(2), invoke::Answer::Stream)
        }
        (&M::PUT, ["2017-10-31", "functions", _, "concurrency"]) => Route::PutConcurrency(f(2)),
        (&M::DELETE, ["2017-10-31", "functions", _, "concurrency"]) => {
            Route::DeleteConcurrency(f(2))
        }
        (&M::GET, ["2019-09-30", "functions", _, "concurrency"]) => Route::GetConcurrency(f(2)),
        (&M::PUT, ["2019-09-30", "functions", _, "provisioned-concurrency"]) => {
            Route::PutProvisioned(f(2))
        }
        (&M::GET, ["2019-09-30", "functions", _, "provisioned-concurrency"]) => {
            Route::GetProvisioned(f(2))
        }
        (&M::DELETE, ["2019-09-30", "functions", _, "provisioned-concurrency"]) => {
            Route::DeleteProvisioned(f(2))
        }
        (&M::POST, ["2018-10-31", "layers", _, "versions"]) => Route::PublishLayer(f(2)),
        (&M::GET, ["2018-10-31", "layers", _, "versions"]) => Route::ListLayerVersions(f(2)),
        (&M::GET, ["2018-10-31", "layers", _, "versions", _]) => Route::GetLayerVersion(f(2), f(4)),
        (&M::DELETE, ["2018-10-31", "layers", _, "versions", _]) => {
            Route::DeleteLayerVersion(f(2), f(4))
        }
        (&M::GET, ["2016-08-19", "account-settings"]) => Route::GetAccountSettings,
        (&M::POST, ["2015-03-31", "functions", _, "policy"]) => Route::AddPermission(f(2)),
        (&M::GET, ["2015-03-31", "functions", _, "policy"]) => Route::GetPolicy(f(2)),
        (&M::DELETE, ["2015-03-31", "functions", _, "policy", _]) => {
            Route::RemovePermission(f(2), f(4))
        }
        (&M::GET, ["2018-10-31", "layers"]) => Route::ListLayers,
        (&M::POST, ["2017-03-31", "tags", _]) => Route::TagResource(f(2)),
        (&M::DELETE, ["2017-03-31", "tags", _]) => Route::UntagResource(f(2)),
        (&M::GET, ["2017-03-31", "tags", _]) => Route::ListTags(f(2)),
        (&M::GET, ["2020-06-30", "functions", _, "code-signing-config"]) => {
            Route::GetFunctionCodeSigningConfig(f(2))
        }
        (&M::PUT, ["2020-06-30", "functions", _, "code-signing-config"]) => {
            Route::PutFunctionCodeSigningConfig(f(2))
        }
        (&M::DELETE, ["2020-06-30", "functions", _, "code-signing-config"]) => {
            Route::DeleteFunctionCodeSigningConfig(f(2))
        }
        (&M::GET, ["2020-04-22", "code-signing-configs"]) => Route::ListCodeSigningConfigs,
        (&M::GET, ["2021-07-20", "functions", _, "runtime-management-config"]) => {
            Route::GetRuntimeManagementConfig(f(2))
        }
        (&M::PUT, ["2021-07-20", "functions", _, "runtime-management-config"]) => {
            Route::PutRuntimeManagementConfig(f(2))
        }
        (&M::POST, ["2021-10-31", "functions", _, "url"]) => Route::CreateFunctionUrlConfig(f(2)),
        (&M::GET, ["2021-10-31", "functions", _, "url"]) => Route::GetFunctionUrlConfig(f(2)),
        (&M::PUT, ["2021-10-31", "functions", _, "url"]) => Route::UpdateFunctionUrlConfig(f(2)),
        (&M::DELETE, ["2021-10-31", "functions", _, "url"]) => Route::DeleteFunctionUrlConfig(f(2)),
        (&M::GET, ["2021-10-31", "functions", _, "urls"]) => Route::ListFunctionUrlConfigs(f(2)),
        (&M::GET, ["ember", "environments"]) => Route::ListEnvironments,
        (&M::GET, ["ember", "code", _, _]) => Route::GetCode(f(2), f(3)),
        (&M::GET, ["metrics"]) => Route::Metrics,
        (&M::GET, ["ember", "logs", _]) => Route::GetLogs(f(2)),
        (&M::GET, ["ember", "fleet"]) => Route::FleetStatus,
        (m, rest) => match crate::api::events::route(m, rest) {
            Some(r) => Route::Events(r),
            None => {
                return Err(ApiError::UnknownOperation(format!(
                    "No operation matches {method} /{}",
                    s.join("/")
                )))
            }
        },
    };
    Ok(r)
}

/// Splits a request target into percent-decoded segments (a trailing `/`
/// is ignored) and query pairs. Bad escapes are a client error.
pub fn parse_target(path: &str, query: Option<&str>) -> Result<(Vec<String>, Query), ApiError> {
    let segs = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(pct_decode)
        .collect::<Result<Vec<_>, _>>()?;
    let q = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((pct_decode(k)?, pct_decode(&v.replace('+', " "))?))
        })
        .collect::<Result<Query, ApiError>>()?;
    Ok((segs, q))
}

fn pct_decode(s: &str) -> Result<String, ApiError> {
    crate::pct::strict(s).map_err(|e| match e {
        crate::pct::PctError::Escape => {
            ApiError::InvalidParameter("Malformed percent-encoding in the request path".into())
        }
        crate::pct::PctError::Utf8 => {
            ApiError::InvalidParameter("The request path is not UTF-8".into())
        }
    })
}

/// Runs one control-plane operation (blocking: call on a blocking thread).
pub fn dispatch(app: &App, route: Route, req: &Req) -> Result<Reply, ApiError> {
    match route {
        Route::ListFunctions => functions::list(app, req),
        Route::CreateFunction => functions::create(app, req),
        Route::GetFunction(n) => functions::get(app, req, &n),
        Route::DeleteFunction(n) => functions::delete(app, req, &n),
        Route::GetConfiguration(n) => functions::get_configuration(app, req, &n),
        Route::UpdateConfiguration(n) => functions::update_configuration(app, req, &n),
        Route::UpdateCode(n) => functions::update_code(app, req, &n),
        Route::GetCode(n, v) => functions::download(app, req, &n, &v),
        Route::ListVersions(n) => versions::list(app, req, &n),
        Route::PublishVersion(n) => versions::publish(app, req, &n),
        Route::ListAliases(n) => versions::list_aliases(app, req, &n),
        Route::CreateAlias(n) => versions::create_alias(app, req, &n),
        Route::GetAlias(n, a) => versions::get_alias(app, req, &n, &a),
        Route::UpdateAlias(n, a) => versions::update_alias(app, req, &n, &a),
        Route::DeleteAlias(n, a) => versions::delete_alias(app, req, &n, &a),
        Route::PutConcurrency(n) => provisioned::put_reserved(app, req, &n),
        Route::GetConcurrency(n) => provisioned::get_reserved(app, req, &n),
        Route::DeleteConcurrency(n) => provisioned::delete_reserved(app, req, &n),
        Route::PutProvisioned(n) => provisioned::put(app, req, &n),
        Route::GetProvisioned(n) => provisioned::get(app, req, &n),
        Route::DeleteProvisioned(n) => provisioned::delete(app, req, &n),
        Route::PublishLayer(l) => layers::publish(app, req, &l),
        Route::ListLayerVersions(l) => layers::list(app, req, &l),
        Route::GetLayerVersion(l, v) => layers::get(app, req, &l, &v),
        Route::DeleteLayerVersion(l, v) => layers::delete(app, req, &l, &v),
        Route::GetAccountSettings => account::get(app, req),
        Route::AddPermission(n) => policy::add(app, req, &n),
        Route::RemovePermission(n, sid) => policy::remove(app, req, &n, &sid),
        Route::GetPolicy(n) => policy::get(app, req, &n),
        Route::ListLayers => layers::list_or_find(app, req),
        Route::TagResource(r) => tags::tag(app, req, &r),
        Route::UntagResource(r) => tags::untag(app, req, &r),
        Route::ListTags(r) => tags::list(app, req, &r),
        Route::GetFunctionCodeSigningConfig(n) => function_settings::get_code_signing(app, req, &n),
        Route::PutFunctionCodeSigningConfig(n) => function_settings::put_code_signing(app, req, &n),
        Route::DeleteFunctionCodeSigningConfig(n) => {
            function_settings::delete_code_signing(app, req, &n)
        }
        Route::ListCodeSigningConfigs => Ok(function_settings::list_code_signing_configs()),
        Route::GetRuntimeManagementConfig(n) => {
            function_settings::get_runtime_management(app, req, &n)
        }
        Route::PutRuntimeManagementConfig(n) => {
            function_settings::put_runtime_management(app, req, &n)
        }
        Route::CreateFunctionUrlConfig(n) => urls::create(app, req, &n),
        Route::GetFunctionUrlConfig(n) => urls::get(app, req, &n),
        Route::UpdateFunctionUrlConfig(n) => urls::update_config(app, req, &n),
        Route::DeleteFunctionUrlConfig(n) => urls::delete(app, req, &n),
        Route::ListFunctionUrlConfigs(n) => urls::list(app, req, &n),
        Route::ListEnvironments => Ok(invoke::list_environments(app, &req.caller)),
        Route::Metrics => Ok(metrics::reply(app, &req.caller)),
        Route::FleetStatus => fleet::status(app),
        Route::GetLogs(_) => Err(ApiError::Service("GetLogs is served asynchronously".into())),
        Route::Events(r) => crate::api::events::dispatch(app, r, req),
        Route::Invoke(..) => Err(ApiError::Service(
            "Invoke is not a control-plane operation".into(),
        )),
    }
}

/// The Invoke parameters carried in the query and headers.
pub fn invoke_req(
    function: String,
    answer: invoke::Answer,
    query: &Query,
    headers: &hyper::HeaderMap,
    caller: Caller,
    original: Option<forward::Original>,
) -> invoke::InvokeReq {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    invoke::InvokeReq {
        function,
        qualifier: query.get("Qualifier").filter(|q| !q.is_empty()).cloned(),
        invocation_type: h("x-amz-invocation-type"),
        log_type: h("x-amz-log-type"),
        client_context: h("x-amz-client-context"),
        content_length: h("content-length").and_then(|v| v.parse().ok()),
        caller,
        answer,
        original,
    }
}

/// Runs `edit` on the function's record; an [`ApiError`] it returns is
/// the answer (the write is abandoned).
pub(super) fn update_function(
    app: &App,
    name: &str,
    edit: impl FnOnce(&mut crate::store::FunctionRecord) -> Result<(), ApiError>,
) -> Result<crate::store::FunctionRecord, ApiError> {
    let mut refused = None;
    let updated = app.functions.store().update_function(name, |f| {
        edit(f).map_err(|e| {
            refused = Some(e);
            crate::store::StoreError::Conflict("refused".into())
        })
    });
    match (refused, updated) {
        (Some(e), _) => Err(e),
        (None, r) => r.map_err(Into::into),
    }
}

/// Validated function name from a path segment or body field (name or
/// ARN) of a request by `account`, as stored: scoped to that account (see
/// [`crate::util::scoped_name`]). A qualifier embedded in an ARN is returned
/// too; an ARN of another account names nothing this caller can see.
pub fn function_name(raw: &str, account: &str) -> Result<(String, Option<String>), ApiError> {
    let (name, q) = crate::util::split_function_name(raw);
    if !crate::util::valid_name(&name) {
        return Err(ApiError::InvalidParameter(format!(
            "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+"
        )));
    }
    if crate::util::arn_account(raw).is_some_and(|a| a != account) {
        return Err(ApiError::NotFound(format!("Function not found: {raw}")));
    }
    Ok((crate::util::scoped_name(account, &name), q))
}

#[cfg(test)]
mod tests;
