//! `emberd` as a process: configuration, startup (lock, crash cleanup,
//! store, pool, provisioned targets), serving, and graceful shutdown on
//! SIGTERM/SIGINT (drain in-flight requests, stop every `ember-vmm`, remove
//! work directories and sockets).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::api::App;
use crate::env::launcher::VmLauncher;
use crate::env::pidfile;
use crate::env::JailConfig;
use crate::events::Events;
use crate::functions::{Capabilities, Functions};
use crate::invoker::Invoker;
use crate::pool::{Pool, PoolConfig};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:9000", env = "EMBER_LISTEN")]
    pub listen: SocketAddr,
    /// Serve function URLs (CreateFunctionUrlConfig) on this address, plain
    /// HTTP: `http://<url-id>.lambda-url.us-east-1.localhost:PORT/…`, or
    /// `http://ADDR/lambda-url/<url-id>/…` for clients that cannot set the
    /// Host header. Without it URL configs are refused.
    #[arg(long, env = "EMBER_URL_LISTEN")]
    pub url_listen: Option<SocketAddr>,
    /// Where functions, code blobs, the key file and run state live.
    #[arg(long, env = "EMBER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The `ember-vmm` binary (default: next to this program).
    #[arg(long, env = "EMBER_VMM")]
    pub vmm: Option<PathBuf>,
    /// The `ember-jailer` binary every VMM runs under (default: next to the
    /// `ember-vmm` in use).
    #[arg(long, env = "EMBER_JAILER")]
    pub jailer: Option<PathBuf>,
    /// Run VMMs without the jailer (no chroot, namespaces, cgroups or
    /// unprivileged uid). Debugging only: environments are NOT isolated.
    #[arg(long)]
    pub no_jail: bool,
    /// Start even when environments cannot run on this host (not root, no
    /// /dev/kvm, binaries missing): serve the control plane only, and answer
    /// invokes with the reason. Without it emberd refuses to start.
    #[arg(long)]
    pub control_plane_only: bool,
    /// The kernel-less wasm agent ELF.
    #[arg(long, env = "EMBER_WASM_AGENT")]
    pub wasm_agent: Option<PathBuf>,
    /// How wasm functions run: `wasmtime` (compiled ahead of time by
    /// `ember-wasm-compile` at create, at native speed) or `wasmi`
    /// (interpreted: no compile step, 10-40x slower on compute).
    #[arg(long, default_value = "wasmtime", value_parser = ["wasmtime", "wasmi"])]
    pub wasm_engine: String,
    /// Which guest runs `python3.11` functions: `auto` (a Linux guest where
    /// this host can run one and the ZIP holds native extensions, else the
    /// kernel-less guest), `wasm` or `linux`.
    #[arg(long, value_enum, default_value = "auto", env = "EMBER_PYTHON_GUEST")]
    pub python_guest: crate::python::Setting,
    /// CPython for the kernel-less guest (a `scripts/build-python-wasm.sh`
    /// output; default: the newest under ${EMBER_CACHE:-~/.cache/ember}/python-wasm).
    #[arg(long, env = "EMBER_PYTHON_WASM_DIR")]
    pub python_wasm_dir: Option<PathBuf>,
    /// The wasm compiler (default: `ember-wasm-compile` beside emberd).
    #[arg(long, env = "EMBER_WASM_COMPILE")]
    pub wasm_compiler: Option<PathBuf>,
    /// Seconds an unused environment stays warm.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Seconds after which every environment is replaced (drained first).
    #[arg(long, default_value_t = 4 * 3600)]
    pub max_lifetime: u64,
    /// Host-wide concurrent invocations (default: from host memory).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// MiB all execution environments together may claim: each claims its
    /// function's memory + 16 MiB while it exists, warm idle ones included
    /// (default: half of the host's memory).
    #[arg(long)]
    pub memory_budget_mib: Option<u64>,
    /// Booted, never-used VMs kept ready for cold starts (functions of
    /// --spare-mib MiB only); 0 turns this off.
    #[arg(long, default_value_t = 2)]
    pub spare_vms: usize,
    /// Memory size of the spare VMs.
    #[arg(long, default_value_t = 128)]
    pub spare_mib: u32,
    /// Environments kept restored ahead of need per SnapStart version (once
    /// it had a cold start), each holding its memory claim while it waits,
    /// made only with free room in the budget; 0 (default) turns this off.
    #[arg(long, default_value_t = 0)]
    pub snapstart_spares: usize,
    /// Jailed ember-vmm processes kept started ahead, bound to no function,
    /// for cold SnapStart restores that find no restored spare: the restore
    /// only loads the snapshot into one. Kept only while some version has a
    /// SnapStart snapshot; each is an idle VMM process (no guest memory, no
    /// memory-budget claim); 0 turns this off.
    #[arg(long, default_value_t = 1)]
    pub restore_slots: usize,
    /// Serve `GET /metrics` without a signature to clients on loopback
    /// (every other request, and /metrics from elsewhere, must be signed).
    #[arg(long)]
    pub metrics_no_auth_on_loopback: bool,
    /// Serve `GET /metrics` (the host-wide view) to clients that send
    /// `Authorization: Bearer TOKEN` with the token in this file (16+
    /// printable characters; the file must not be readable by others), for
    /// scrapers that cannot sign requests, such as Prometheus.
    #[arg(long)]
    pub metrics_token_file: Option<PathBuf>,
    /// Refuse a request whose signature was already accepted (a replay
    /// within the 5-minute clock window). Off by default: it keeps every
    /// signature of the last 10 minutes in memory.
    #[arg(long)]
    pub replay_cache: bool,
    /// Tests only (hidden): passes `--test-hook SPEC` to every ember-vmm.
    /// Only an ember-vmm built with the `test-hooks` feature accepts it; a
    /// production build refuses it, so then no environment starts.
    #[arg(long, hide = true)]
    pub vmm_test_hook: Option<String>,
    /// Serve the API over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Function log rotation and retention.
    #[command(flatten)]
    pub logs: crate::logs::LogArgs,
    /// Seconds a kernel-less VM may take from spawn to its agent's `Ready`;
    /// also the least time a function's `Init` gets (Lambda's 10 s init
    /// allowance). A guest that has not answered by then is killed.
    #[arg(long, default_value_t = 10)]
    pub boot_timeout: u64,
    /// CPU quota of every jailed VM: one core per this many MiB of function
    /// memory (Lambda's rule: 1,769 MB = 1 vCPU), at least half a core; 0
    /// turns quotas off.
    #[arg(long, default_value_t = crate::env::launcher::LAMBDA_MIB_PER_VCPU)]
    pub mib_per_vcpu: u32,
    /// CPU kept from all jailed VMs together, in thousandths of a core, for
    /// emberd and the rest of the host: the VMs share one cgroup quota of
    /// the host's cores less this (default: a tenth of the host, at least
    /// 250); 0 = no shared cap.
    #[arg(long, value_name = "MILLICORES")]
    pub host_cpu_reserve: Option<u64>,
    /// Seconds SIGTERM waits for in-flight invocations.
    #[arg(long, default_value_t = 10)]
    pub drain_timeout: u64,
    #[command(flatten)]
    pub linux: crate::linux::LinuxArgs,
    #[command(flatten)]
    pub audit: crate::audit::AuditArgs,
    #[command(flatten)]
    pub edge: crate::server::EdgeArgs,
    #[command(flatten)]
    pub events: crate::events::EventArgs,
    #[command(flatten)]
    pub store: crate::store::StoreArgs,
    #[command(flatten)]
    pub fleet: crate::fleet::FleetArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("another emberd is using {0}")]
    Locked(PathBuf),
    #[error("opening the store")]
    Store(#[from] crate::store::StoreError),
    #[error("opening the event queue")]
    Events(#[from] crate::events::EventsError),
    #[error("listening on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("installing signal handlers")]
    Signal(#[source] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("cannot run environments on this host: {}; --control-plane-only starts anyway", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Preflight(Vec<crate::preflight::Problem>),
    #[error("credentials")]
    Credentials(#[from] crate::auth::creds::CredError),
    #[error("metrics token")]
    MetricsToken(#[from] crate::auth::bearer::TokenError),
    #[error("TLS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("function logs")]
    Logs(#[from] crate::logs::LogError),
    #[error("opening the audit trail")]
    Audit(#[from] crate::audit::AuditError),
    #[error("joining the fleet")]
    Fleet(#[from] crate::fleet::FleetError),
}

/// `/var/lib/ember` for root, `~/.local/share/ember` otherwise.
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/ember");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/ember")
}

/// A sibling of the running executable, if it exists.
fn beside_exe(name: &str) -> Option<PathBuf> {
    let p = std::env::current_exe().ok()?.parent()?.join(name);
    p.exists().then_some(p)
}

/// The agent as `guest-agent/kernelless/build.sh` leaves it, found from the
/// repository root when emberd runs from `target/<profile>/`.
fn kernelless_agent() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|a| {
            a.join(
                "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/ember-wasm-agent",
            )
        })
        .find(|p| p.is_file())
}

/// One environment per 256 MiB of host memory (a 128 MiB guest plus VMM
/// overhead, leaving half the host for everything else), at least 4.
/// MemTotal in MiB (4 GiB if /proc/meminfo cannot say).
fn host_memory_mib() -> u64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    kib / 1024
}

fn default_concurrency() -> u32 {
    ((host_memory_mib() / 256) as u32).max(4)
}

/// How long a starting emberd waits for the run-dir lock before it concludes
/// that another emberd really owns the directory.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// [`lock_run_dir`], retried for [`LOCK_PATIENCE`]: a predecessor that was just
/// killed may still be on its way out (its open files are released only when
/// its last thread has exited), and a restart right after a crash must not fail
/// on that.
async fn lock_run_dir_patiently(run: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    let give_up = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match lock_run_dir(run) {
            Err(DaemonError::Locked(_)) if std::time::Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Takes an exclusive lock on `<run>/emberd.lock` (held for the process's life).
fn lock_run_dir(run: &std::path::Path) -> Result<std::fs::File, DaemonError> {
    let path = run.join("emberd.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DaemonError::Dir(path.clone(), e))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(DaemonError::Locked(run.to_path_buf()));
    }
    Ok(f)
}

/// The single-host store, or with `--cluster` a fleet host's store over the
/// shared buckets (code sealed with the operator's key file, which must exist).
fn open_store(
    args: &ServeArgs,
    data: &std::path::Path,
    fleet: Option<&crate::fleet::Fleet>,
) -> Result<Store, DaemonError> {
    let dir = data.join("store");
    let Some(fleet) = fleet else {
        return Ok(Store::open(&dir)?.with_limits((&args.store).into()));
    };
    let key = fleet_key(args, data)?;
    let shared = crate::fleet::FleetRecords::new(fleet.bridge.clone(), fleet.buckets.clone());
    Ok(Store::open_shared(&dir, &key, Arc::new(shared))?.with_limits((&args.store).into()))
}

/// The fleet's code key file: `--cluster-key` or the store's own key,
/// which must exist (a fleet never creates one: every host needs the same).
fn fleet_key(args: &ServeArgs, data: &std::path::Path) -> Result<PathBuf, DaemonError> {
    let key = args
        .fleet
        .cluster_key
        .clone()
        .unwrap_or_else(|| data.join("store").join("master.key"));
    if !key.is_file() {
        return Err(DaemonError::Config(format!(
            "--cluster needs the fleet's code key: {} does not exist (one 32-byte file, mode 0600, the same on every host; --cluster-key names it)",
            key.display()
        )));
    }
    Ok(key)
}

/// Runs emberd until SIGTERM/SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), DaemonError> {
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let run = data.join("run");
    std::fs::create_dir_all(&run).map_err(|e| DaemonError::Dir(run.clone(), e))?;
    let _lock = lock_run_dir_patiently(&run).await?;
    let killed = pidfile::clean_previous_run(&run);
    if killed > 0 {
        eprintln!("emberd: killed {killed} ember-vmm/ember-jailer left over from a previous run");
    }
    let fleet = match args.fleet.enabled() {
        true => {
            fleet_key(&args, &data)?;
            Some(crate::fleet::Fleet::connect(&args.fleet)?)
        }
        false => None,
    };
    let store = Arc::new(open_store(&args, &data, fleet.as_ref())?);
    let creds_path = data.join(crate::auth::creds::FILE_NAME);
    let first_key = crate::auth::creds::ensure_initial(&creds_path)?;
    let mut auth = crate::auth::Authenticator::new(creds_path.clone());
    auth.metrics_open_on_loopback = args.metrics_no_auth_on_loopback;
    if let Some(path) = &args.metrics_token_file {
        auth.metrics_token = Some(crate::auth::bearer::MetricsToken::load(path)?);
    }
    if args.replay_cache {
        auth.replay = Some(crate::auth::replay::ReplayCache::new());
    }
    // After the leftovers are killed: attempts they were running are closed
    // as interrupted and redelivered, never run twice at once.
    let events = Events::open(&data.join("store").join("events.redb"), &args.events)?;
    let vmm = args
        .vmm
        .clone()
        .or_else(|| beside_exe("ember-vmm"))
        .unwrap_or_else(|| "ember-vmm".into());
    let agent = args
        .wasm_agent
        .clone()
        .or_else(|| beside_exe("ember-wasm-agent"))
        .or_else(kernelless_agent)
        .unwrap_or_else(|| "ember-wasm-agent".into());
    let jail = if args.no_jail {
        eprintln!("emberd: WARNING: --no-jail: every ember-vmm runs unjailed, as this user, in the host's namespaces. Debugging only; environments are NOT isolated.");
        None
    } else {
        let jailer = args.jailer.clone().unwrap_or_else(|| {
            vmm.parent()
                .map(|d| d.join("ember-jailer"))
                .filter(|p| p.is_file())
                .or_else(|| beside_exe("ember-jailer"))
                .unwrap_or_else(|| "ember-jailer".into())
        });
        let mut jail = JailConfig::new(jailer);
        let host = std::thread::available_parallelism().map_or(1, |n| n.get() as u64) * 1000;
        let reserve = args
            .host_cpu_reserve
            .unwrap_or_else(|| crate::env::default_cpu_reserve_millicores(host));
        jail.all_vms_cpu_quota_us = crate::env::all_vms_cpu_quota_us(host, reserve)
            .map_err(|e| DaemonError::Config(format!("--host-cpu-reserve: {e}")))?;
        Some(jail)
    };
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let (linux_offer, linux) =
        crate::linux::caps::setup(&args.linux, &run.join("images"), store.clone());
    let aot = crate::aot::setup(
        &args.wasm_engine,
        args.wasm_compiler.clone(),
        &store,
        &data.join("store"),
    );
    let python = Arc::new(python_setup(&args, &linux_offer));
    let vault = open_vault(&data.join("store"), &run)?;
    let launcher = VmLauncher::new(vmm, agent)
        .with_snapstart(Some(vault.clone()))
        .with_aot(aot.clone())
        .with_python(python.clone(), store.clone())
        .with_metrics(metrics.clone())
        .with_jail(jail)
        .with_linux(linux.clone())
        .with_test_hook(args.vmm_test_hook.as_deref())
        .with_boot_timeout(Duration::from_secs(args.boot_timeout.max(1)))
        .with_cpu_rule(args.mib_per_vcpu)
        .with_spares(args.spare_vms, args.spare_mib, &run)
        .with_restored_spares(args.snapstart_spares, &run)
        .with_restore_slots(args.restore_slots, &run);
    let restored = launcher.restored_spares();
    // SAFETY: geteuid has no preconditions and touches no memory.
    let euid = unsafe { libc::geteuid() };
    let problems = crate::preflight::check(
        !args.no_jail,
        euid,
        std::path::Path::new("/dev/kvm"),
        launcher.unavailable(),
    );
    if !problems.is_empty() {
        if !args.control_plane_only {
            return Err(DaemonError::Preflight(problems));
        }
        for p in &problems {
            eprintln!("emberd: WARNING: cannot start environments: {p}. Serving the control plane only (--control-plane-only).");
        }
    }
    let host_limit = args.max_concurrency.unwrap_or_else(default_concurrency);
    let cfg = PoolConfig {
        idle_timeout: Duration::from_secs(args.idle_timeout),
        max_lifetime: Duration::from_secs(args.max_lifetime),
        host_limit,
        memory_budget: args
            .memory_budget_mib
            .unwrap_or_else(|| host_memory_mib() / 2)
            << 20,
        run_dir: run.clone(),
    };
    let launcher: Arc<dyn crate::env::EnvLauncher> = Arc::new(launcher);
    let pool = Pool::new(launcher.clone(), cfg);
    if let Some(r) = restored {
        r.set_budget(crate::pool::budget(&pool));
    }
    let snapstart =
        crate::snapstart::SnapStart::new(store.clone(), launcher, pool.clone(), vault.clone());
    let (funcs, _) = store.list_functions(None, usize::MAX)?;
    for f in funcs.iter().filter(|f| f.reserved_concurrency.is_some()) {
        pool.set_reserved(&f.name, f.reserved_concurrency);
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::acceptor(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "emberd: WARNING: listening on {} without TLS: signatures protect integrity, not secrecy (payloads, code and keys' use are readable on the wire); pass --tls-cert/--tls-key for anything but loopback",
            args.listen
        );
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| DaemonError::Listen(args.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DaemonError::Listen(args.listen, e))?;
    let url_listener = match args.url_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| DaemonError::Listen(a, e))?,
        ),
        None => None,
    };
    let url_addr = url_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(|e| DaemonError::Listen(addr, e))?;
    let audit = Arc::new(crate::audit::AuditLog::open(
        &crate::audit::audit_dir(&data),
        args.audit.config(),
    )?);
    let logs = Arc::new(crate::logs::Logs::start(
        data.join("logs"),
        args.logs.config(),
        metrics.clone(),
    )?);
    let members = fleet.as_ref().map(|f| {
        let pool = pool.clone();
        let report: crate::fleet::Report = Arc::new(move || {
            let (idle, busy) = pool.load();
            let warm = idle
                .into_iter()
                .map(|((function, version), idle)| crate::fleet::WarmVersion {
                    function,
                    version,
                    idle,
                })
                .collect();
            crate::fleet::Load {
                warm,
                busy,
                capacity: pool.host_limit(),
            }
        });
        Arc::new(crate::fleet::Members::new(
            f,
            format!("{scheme}://{addr}"),
            report,
        ))
    });
    let invoker = Invoker::new(store.clone(), pool.clone(), metrics.clone(), logs.clone());
    let functions = Functions::new(
        store,
        pool.clone(),
        metrics.clone(),
        events.clone(),
        Capabilities {
            linux: linux_offer,
            linux_guests: linux,
            aot,
            python: Some(python),
            snapstart: Some(snapstart.clone()),
        },
    );
    let app = Arc::new(App {
        functions,
        invoker: invoker.clone(),
        events: events.clone(),
        base_url: format!("{scheme}://{addr}"),
        metrics,
        auth: Arc::new(auth),
        logs,
        audit: Some(audit.clone()),
        fleet: members.clone(),
        urls: Arc::new(crate::urls::Urls::new(url_addr)),
    });
    app.functions
        .reconcile()
        .map_err(|e| DaemonError::Config(format!("provisioned concurrency: {e}")))?;
    snapstart.resume_pending();

    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let stopping = pool.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // Environments still starting are killed now, not drained: a guest
        // that never finishes its start cannot hold the shutdown.
        stopping.stop_starts();
        let _ = tx.send(true);
    });
    tokio::spawn(
        pool.clone()
            .run_maintenance(Duration::from_millis(200), rx.clone()),
    );
    if let Some(m) = &members {
        m.start(rx.clone())?;
        eprintln!("emberd: joined the fleet as {}", m.node_id());
    }
    tokio::spawn(crate::audit::tasks::digest_timer(audit.clone(), rx.clone()));
    tokio::spawn(crate::audit::tasks::watch_credentials(
        audit.clone(),
        creds_path.clone(),
        rx.clone(),
    ));
    println!(
        "emberd listening on {scheme}://{addr} (data {}, max concurrency {host_limit})",
        data.display()
    );
    // After the "listening" line, which scripts wait for; printed only on
    // the start that created the key (it stays in the 0600 file).
    if let Some(k) = first_key {
        println!(
            "emberd created an access key (account {}), saved in {}:\n  AWS_ACCESS_KEY_ID={}\n  AWS_SECRET_ACCESS_KEY={}",
            k.account,
            creds_path.display(),
            k.access_key_id,
            k.secret_access_key
        );
    }
    let drain = Duration::from_secs(args.drain_timeout);
    if let (Some(l), Some(a)) = (url_listener, url_addr) {
        println!("emberd serves function URLs on http://{a}");
        tokio::spawn(crate::server::run_urls(
            l,
            app.clone(),
            rx.clone(),
            drain,
            args.edge.clone(),
        ));
    }
    let workers = events.start(invoker, rx.clone());
    let logs = app.logs.clone();
    crate::server::run_tls(listener, app, rx, drain, tls, args.edge.clone()).await;
    eprintln!("emberd: shutting down");
    crate::events::drain(workers, drain).await;
    pool.shutdown(drain).await;
    let _ = tokio::task::spawn_blocking(move || logs.flush(Duration::from_secs(2))).await;
    if let Err(e) = audit.close() {
        eprintln!(
            "emberd: ERROR: audit trail not closed: {}",
            crate::util::error_chain(&e)
        );
    }
    let _ = std::fs::remove_dir_all(run.join("envs"));
    vault.close();
    Ok(())
}

/// The SnapStart vault: sealed snapshots beside the code blobs, decrypted
/// copies in tmpfs (`/dev/shm`, else the run directory), never on disk.
fn open_vault(
    store_dir: &std::path::Path,
    run: &std::path::Path,
) -> Result<Arc<crate::snapstart::vault::Vault>, DaemonError> {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm } else { run };
    let plain = base.join(format!("ember-ss-{}", std::process::id()));
    crate::snapstart::vault::sweep_stale(base);
    crate::snapstart::vault::Vault::open(store_dir, &plain)
        .map(Arc::new)
        .map_err(|e| {
            DaemonError::Config(format!("SnapStart vault: {}", crate::util::error_chain(&e)))
        })
}

/// `emberd` and `ember serve`.
pub fn run(args: ServeArgs) -> std::process::ExitCode {
    crate::heap::tune();
    crate::heap::start_trimming();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("emberd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(serve(args));
    // Blocking threads still running (a launch or an invocation whose VM was
    // killed, returning) get a moment; the process never waits on them.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emberd: {}", crate::util::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// emberd's python3.11 policy: the operator's setting, CPython for the
/// kernel-less guest when its files are found, and whether a Linux guest can
/// run python3.11 here.
fn python_setup(args: &ServeArgs, linux: &crate::linux::Offer) -> crate::python::Python {
    use crate::python::{Python, Setting, WasmRuntime};
    let wasm = match (
        args.python_guest,
        WasmRuntime::find(args.python_wasm_dir.as_deref()),
    ) {
        (Setting::Linux, _) => None,
        (_, None) => {
            eprintln!("emberd: no CPython for the kernel-less guest (scripts/build-python-wasm.sh builds it; --python-wasm-dir names it): python3.11 needs a Linux guest");
            None
        }
        (_, Some(dir)) => match WasmRuntime::load(&dir) {
            Ok(rt) => {
                eprintln!(
                    "emberd: python3.11 on the kernel-less guest from {}",
                    dir.display()
                );
                Some(Arc::new(rt))
            }
            Err(e) => {
                eprintln!("emberd: WARNING: {e}");
                None
            }
        },
    };
    Python {
        setting: args.python_guest,
        wasm,
        linux: linux.check(crate::python::RUNTIME),
    }
}
