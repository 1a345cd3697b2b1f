//! `ember-agent`: the Linux guest agent. As PID 1 it reads `ember_*` words of
//! the kernel command line, mounts its images and connects over vsock; as an
//! ordinary process it takes `--name value` flags (`--unix PATH` for tests).

use std::time::{Duration, Instant};

use ember_guest::linux::config::HostAddr;
use ember_guest::linux::{
    pid1, run, AgentConfig, TcpTransport, Transport, UnixTransport, VsockTransport,
};

fn main() {
    let started = Instant::now();
    let is_pid1 = std::process::id() == 1;
    let code = if is_pid1 {
        main_pid1(started)
    } else {
        main_process(started)
    };
    std::process::exit(code);
}

fn transport(cfg: &AgentConfig) -> Box<dyn Transport> {
    match &cfg.host {
        HostAddr::Unix(path) => Box::new(UnixTransport { path: path.clone() }),
        HostAddr::Tcp(addr) => Box::new(TcpTransport { addr: *addr }),
        HostAddr::Vsock { cid, port } => Box::new(VsockTransport {
            cid: *cid,
            port: *port,
        }),
    }
}

fn main_process(started: Instant) -> i32 {
    let cfg = match AgentConfig::from_args(std::env::args().skip(1)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("ember-agent: {e}");
            return 2;
        }
    };
    match run(cfg.clone(), transport(&cfg).as_ref(), started, Vec::new()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ember-agent: {e}: {}", ember_abi::error::sources(&e));
            1
        }
    }
}

fn main_pid1(started: Instant) -> i32 {
    let mut timings = Vec::new();
    let t = Instant::now();
    if let Err(e) = pid1::early_mounts() {
        eprintln!(
            "ember-agent: early mounts: {e}: {}",
            ember_abi::error::sources(&e)
        );
    }
    eprintln!(
        "ember-agent: started as PID 1 (ember-agent {})",
        env!("CARGO_PKG_VERSION")
    );
    let cfg = AgentConfig::from_kernel_env(std::env::vars());
    let found = pid1::discover();
    eprintln!("ember-agent: found devices: {found}");
    match pid1::enter_runtime(&cfg.devices, &found) {
        Ok(mounted) => eprintln!("ember-agent: mounted: {}", mounted.join("; ")),
        Err(e) => {
            eprintln!("ember-agent: FATAL: {e}: {}", ember_abi::error::sources(&e));
            pid1::power_off();
        }
    }
    if let Some(cg) = &cfg.cgroup_root {
        if let Err(e) = pid1::setup_cgroup(cg) {
            eprintln!(
                "ember-agent: no memory cgroup ({e}); Max Memory Used falls back to peak RSS"
            );
        }
    }
    if let Err(e) = pid1::loopback_up() {
        eprintln!("ember-agent: cannot bring up lo: {e}");
    }
    if let Some((ip, prefix)) = cfg.eth0 {
        match pid1::ipv4_up("eth0", ip, prefix) {
            Ok(()) => eprintln!("ember-agent: eth0 {ip}/{prefix}"),
            Err(e) => eprintln!("ember-agent: cannot configure eth0: {e}"),
        }
    }
    timings.push(("mounts".to_string(), t.elapsed().as_micros() as u64));
    // Boot time counts from the kernel's start, not ours.
    let started = pid1::uptime_us()
        .and_then(|us| Instant::now().checked_sub(Duration::from_micros(us)))
        .unwrap_or(started);
    if let Err(e) = run(cfg.clone(), transport(&cfg).as_ref(), started, timings) {
        eprintln!("ember-agent: FATAL: {e}: {}", ember_abi::error::sources(&e));
    }
    pid1::power_off();
}
