//! Starting one `ember-vmm` child for an environment: the work directory,
//! the vsock listener created before the VM exists (so the agent's connect
//! never races it), the command line, and waiting for either the agent's
//! connection or the child's death without polling (pidfd + poll(2)).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ember_abi::exit::VmmStatus;
use ember_abi::protocol::AGENT_PORT;
use ember_abi::vmm_args::{self, DriveArg, VmmArgs, VsockArg};

use super::jail::{self, JailConfig};
use super::AgentError;
use crate::util::OnSpawn;

/// The guest CID every environment uses (each VM has its own vsock device,
/// so CIDs need not differ between VMs).
pub const GUEST_CID: u32 = 3;
/// The VMM's API socket in its work directory (`--api-sock`).
pub const API_SOCK: &str = "api.sock";
/// Longest path a Unix socket address can hold (sun_path, NUL included).
const SUN_PATH_MAX: usize = 108;

/// Guest memory for a kernel-less wasm environment whose function may use
/// `function_mib` of linear memory. wasmi grows linear memory as a `Vec`
/// (capacity doubling) inside ember_rt's power-of-two heap, which frees but
/// never coalesces the old blocks: reaching the full function size needs up
/// to ~4x in heap, plus 48 MiB for the agent, its heap and vsock buffers.
/// Guest memory is mapped lazily, so only the pages a function touches cost
/// host memory. (Measured: 4x + 48 lets a 128 MiB function reach 124 MiB;
/// 3x + 48 stops it at 64 MiB, where `memory.grow` returns -1.)
pub fn vm_memory_mib(function_mib: u32) -> u32 {
    function_mib.saturating_mul(4).saturating_add(48)
}

/// Which guest the environment boots.
#[derive(Debug, Clone)]
pub enum Guest {
    /// A kernel-less agent ELF (`ember-wasm-agent`).
    Kernelless { elf: PathBuf },
    /// A Linux kernel whose init is the Linux agent (`ember-agent`).
    Linux {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
}

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    Off,
    /// A file (created or truncated).
    File(PathBuf),
}

/// How to launch one environment.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The `ember-vmm` binary.
    pub vmm: PathBuf,
    pub guest: Guest,
    pub mem_mib: u32,
    pub vcpus: u8,
    /// Parent of the per-environment work directories. Keep it short: the
    /// vsock socket path inside must fit in 107 bytes.
    pub work_root: PathBuf,
    pub console: Console,
    /// How long the agent may take to connect and send `Ready`.
    pub boot_timeout: Duration,
    /// Extra time past an invocation's deadline before the host kills the VM.
    pub deadline_grace: Duration,
    /// Read-only drives, in order (the Linux agent's vda, vdb, ...); under a
    /// jail each is bind-mounted into it read-only.
    pub drives: Vec<PathBuf>,
    /// Extra `ember-vmm` arguments. Under a jail, paths in them are paths
    /// inside the jail.
    pub extra_args: Vec<String>,
    /// Run the VMM through `ember-jailer` (`None`: a plain child process).
    pub jail: Option<JailConfig>,
    /// Serve Firecracker's API on `<work dir>/api.sock` too (SnapStart
    /// snapshots an environment through it).
    pub api: bool,
    /// Boot nothing: load this snapshot through the API socket instead
    /// (SnapStart restore); the agent then connects as after a boot.
    pub restore: Option<RestoreFrom>,
    /// A restore slot ([`super::slots`]): start the VMM in API mode with
    /// nothing to load yet. Under a jail this host directory is bound
    /// read-only at [`super::jail::JAIL_SLOT_DIR`]; the snapshot's files are
    /// linked into it when the slot is claimed.
    pub slot: Option<PathBuf>,
}

/// A decrypted snapshot to restore (host paths; under a jail each file is
/// bound into it read-only).
#[derive(Debug, Clone)]
pub struct RestoreFrom {
    pub state: PathBuf,
    pub mem: PathBuf,
}

impl LaunchConfig {
    /// Defaults for a kernel-less agent ELF.
    pub fn kernelless(vmm: impl Into<PathBuf>, elf: impl Into<PathBuf>) -> Self {
        LaunchConfig {
            vmm: vmm.into(),
            guest: Guest::Kernelless { elf: elf.into() },
            mem_mib: 128,
            // vCPU 1 is the wasm agent's epoch timer (it sleeps between
            // ticks): compiled code's deadlines need it.
            vcpus: 2,
            work_root: std::env::temp_dir().join("ember-env"),
            console: Console::Off,
            boot_timeout: Duration::from_secs(10),
            deadline_grace: Duration::from_millis(1000),
            drives: Vec::new(),
            extra_args: Vec::new(),
            jail: None,
            api: false,
            restore: None,
            slot: None,
        }
    }
}

/// A started child whose agent has connected.
pub(crate) struct Launched {
    pub child: Child,
    pub stream: UnixStream,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    pub pidfd: Option<OwnedFd>,
}

/// A spawned VMM whose agent has not connected yet (a restore slot waits
/// in this state): the child, the listener its agent will connect to.
pub(crate) struct Started {
    pub child: Child,
    pub listener: UnixListener,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    pub pidfd: Option<OwnedFd>,
    /// The VM's id (the work directory's name; the jail's and cgroups' name).
    pub id: String,
    /// `child` is an `ember-jailer`.
    pub jailed: bool,
    /// fork/exec (and, jailed, the jailer's set-up until its exec).
    pub spawned: Duration,
    /// A restore slot's VMM (started ahead, see [`super::slots`]).
    pub slot: bool,
}

impl Started {
    /// Kills and reaps the child and removes the work directory.
    pub fn discard(mut self) {
        jail::kill(&mut self.child, self.jailed);
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A snapshot to load, as the VMM names its files and vsock socket (paths
/// inside the jail under one).
pub(crate) struct LoadPaths {
    pub state: String,
    pub mem: String,
    pub uds: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A fresh work directory name, unique within this host.
fn unique_dir(root: &Path) -> PathBuf {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    root.join(format!("{}-{n}-{nanos:x}", std::process::id()))
}

/// The `ember-vmm` command line for this config (`extra_args` last).
pub(crate) fn vmm_args(cfg: &LaunchConfig, uds: &Path, id: &str) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let api_sock = uds.parent().map(|d| path(&d.join(API_SOCK)));
    if cfg.restore.is_some() || cfg.slot.is_some() {
        // A fresh VMM with nothing configured: `PUT /snapshot/load` builds it.
        let mut args = VmmArgs {
            no_api: false,
            api_sock,
            id: Some(id.into()),
            ..VmmArgs::default()
        }
        .to_args();
        args.extend(cfg.extra_args.iter().cloned());
        return args;
    }
    let mut a = VmmArgs {
        no_api: !cfg.api,
        api_sock: if cfg.api { api_sock } else { None },
        id: Some(id.into()),
        mem_mib: Some(cfg.mem_mib.into()),
        vcpus: Some(cfg.vcpus.into()),
        vsock: Some(VsockArg {
            guest_cid: GUEST_CID.into(),
            uds_path: path(uds),
        }),
        console: Some(match &cfg.console {
            Console::Off => vmm_args::Console::Off,
            Console::File(p) => vmm_args::Console::File(path(p)),
        }),
        drives: (cfg.drives.iter())
            .map(|d| DriveArg {
                path: path(d),
                read_only: true,
            })
            .collect(),
        ..VmmArgs::default()
    };
    match &cfg.guest {
        Guest::Kernelless { elf } => {
            a.kernel = Some(path(elf));
            a.kernelless = true;
        }
        Guest::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            a.kernel = Some(path(kernel));
            a.initrd = initrd.as_deref().map(path);
            a.cmdline = Some(cmdline.clone());
        }
    }
    let mut args = a.to_args();
    args.extend(cfg.extra_args.iter().cloned());
    args
}

/// The program and arguments that start `cfg`'s VMM in work directory `dir`
/// (`ember-jailer ... -- <ember-vmm args>` under a jail).
pub(crate) fn command(
    cfg: &LaunchConfig,
    dir: &Path,
    id: &str,
) -> Result<(PathBuf, Vec<String>), AgentError> {
    Ok(match &cfg.jail {
        Some(j) => (j.jailer.clone(), jail::jailer_args(cfg, j, dir, id)?),
        None => (cfg.vmm.clone(), vmm_args(cfg, &dir.join("v.sock"), id)),
    })
}

/// Creates the work dir and listener, spawns `ember-vmm` (telling
/// `on_spawn` its pid at once), loads `cfg.restore` if set, and waits for
/// the agent to connect (or the child to die, or `boot_timeout`).
pub(crate) fn launch(cfg: &LaunchConfig, on_spawn: &OnSpawn) -> Result<Launched, AgentError> {
    let started = start(cfg, on_spawn)?;
    let load = cfg.restore.as_ref().map(|r| match &cfg.jail {
        Some(_) => LoadPaths {
            state: jail::JAIL_SNAP_STATE.into(),
            mem: jail::JAIL_SNAP_MEM.into(),
            uds: jail::jail_uds(),
        },
        None => LoadPaths {
            state: r.state.display().to_string(),
            mem: r.mem.display().to_string(),
            uds: started.dir.join("v.sock").display().to_string(),
        },
    });
    finish(cfg.boot_timeout, started, load.as_ref())
}

/// Creates the work dir and the agent's listener and spawns `ember-vmm`,
/// telling `on_spawn` its pid at once.
pub(crate) fn start(cfg: &LaunchConfig, on_spawn: &OnSpawn) -> Result<Started, AgentError> {
    fs::create_dir_all(&cfg.work_root)
        .map_err(|e| AgentError::WorkDir(cfg.work_root.clone(), e))?;
    let dir = unique_dir(&cfg.work_root);
    fs::create_dir(&dir).map_err(|e| AgentError::WorkDir(dir.clone(), e))?;
    let result = start_in(cfg, &dir, on_spawn);
    if result.is_err() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn start_in(cfg: &LaunchConfig, dir: &Path, on_spawn: &OnSpawn) -> Result<Started, AgentError> {
    let uds = dir.join("v.sock");
    let listen_path = PathBuf::from(format!("{}_{AGENT_PORT}", uds.display()));
    if listen_path.as_os_str().len() >= SUN_PATH_MAX {
        return Err(AgentError::PathTooLong(listen_path));
    }
    let listener = UnixListener::bind(&listen_path)
        .map_err(|e| AgentError::WorkDir(listen_path.clone(), e))?;
    listener.set_nonblocking(true)?;
    let log_path = dir.join("vmm.log");
    let log = File::create(&log_path).map_err(|e| AgentError::WorkDir(log_path.clone(), e))?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (program, args) = command(cfg, dir, &id)?;
    let t0 = Instant::now();
    let child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| AgentError::Spawn(program, e))?;
    on_spawn.call(child.id());
    let pidfd = pidfd_open(child.id());
    Ok(Started {
        child,
        listener,
        dir: dir.to_path_buf(),
        log_path,
        pidfd,
        id,
        jailed: cfg.jail.is_some(),
        spawned: t0.elapsed(),
        slot: cfg.slot.is_some(),
    })
}

/// From a started VMM to a connected agent: `PUT /snapshot/load` of `load`
/// if set, then the agent's connection (within `timeout`). On failure the
/// child is killed and reaped and its work directory removed.
pub(crate) fn finish(
    timeout: Duration,
    started: Started,
    load: Option<&LoadPaths>,
) -> Result<Launched, AgentError> {
    let Started {
        mut child,
        listener,
        dir,
        log_path,
        pidfd,
        id,
        jailed,
        spawned,
        slot,
    } = started;
    let t0 = Instant::now();
    let mut agent = Ok(());
    if let Some(l) = load {
        agent = load_snapshot(timeout, l, &dir, &mut child);
    }
    let loaded = t0.elapsed();
    let agent = agent.and_then(|()| {
        wait_for_agent(
            &listener,
            &mut child,
            pidfd.as_ref(),
            timeout,
            &log_path,
            jailed,
        )
    });
    if load.is_some() && std::env::var_os("EMBER_TRACE_COLD").is_some() {
        // Where a restore's time goes: fork/exec (and the jailer's setup
        // until its exec; a slot's happened ahead), the API socket + `PUT
        // /snapshot/load`, then the restored agent's reconnect.
        let how = if slot {
            "slot, spawned ahead in"
        } else {
            "spawn"
        };
        eprintln!(
            "emberd: restore {id}: {how} {spawned:?}, api+load {loaded:?}, agent {:?}",
            t0.elapsed() - loaded
        );
    }
    match agent {
        Ok(stream) => Ok(Launched {
            child,
            stream,
            dir,
            log_path,
            pidfd,
        }),
        Err(e) => {
            jail::kill(&mut child, jailed);
            let _ = child.wait();
            let _ = fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// `PUT /snapshot/load` on the new VMM's API socket: the snapshot's files
/// and its vsock moved to this environment's socket (`vsock_override`, so
/// the agent's reconnect reaches this environment's listener).
fn load_snapshot(
    timeout: Duration,
    l: &LoadPaths,
    dir: &Path,
    child: &mut Child,
) -> Result<(), AgentError> {
    let until = Instant::now() + timeout;
    let mut s =
        super::vmm_api::connect(&dir.join(API_SOCK), child, until).map_err(AgentError::VmmApi)?;
    let body = serde_json::json!({
        "snapshot_path": l.state,
        "mem_backend": {"backend_type": "File", "backend_path": l.mem},
        "resume_vm": true,
        "vsock_override": {"uds_path": l.uds},
    });
    super::vmm_api::call(&mut s, "PUT", "/snapshot/load", &body, until).map_err(AgentError::VmmApi)
}

fn wait_for_agent(
    listener: &UnixListener,
    child: &mut Child,
    pidfd: Option<&OwnedFd>,
    timeout: Duration,
    log_path: &Path,
    jailed: bool,
) -> Result<UnixStream, AgentError> {
    let until = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            return Err(vm_exited(status, jailed, log_path));
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AgentError::BootTimeout(timeout));
        }
        // Sleep until the listener or the child has news (or a slice passes,
        // which also covers kernels without pidfd).
        let slice = if pidfd.is_some() {
            left
        } else {
            left.min(Duration::from_millis(1))
        };
        poll_two(listener.as_raw_fd(), pidfd.map(|f| f.as_raw_fd()), slice);
    }
}

/// poll(2) on up to two fds for readability; errors and EINTR just return.
fn poll_two(a: i32, b: Option<i32>, timeout: Duration) {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: fds is a valid array of two pollfd for the duration of the
    // call; a negative fd is ignored by poll(2).
    unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
}

/// A pidfd for the child (readable once it exits), if the kernel has them.
pub(crate) fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
    // memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The error for a VMM (or its jailer, `jailed`) that ended with `status`:
/// how it ended, typed from its exit code (`ember_abi::exit`), plus the one
/// line its stderr gave as the reason, for display.
pub(crate) fn vm_exited(status: ExitStatus, jailed: bool, log_path: &Path) -> AgentError {
    AgentError::VmExited {
        status: status.to_string(),
        exit: VmmStatus::from_wait(status.code(), status.signal(), jailed),
        reason: last_log_line(log_path),
    }
}

/// The last non-empty line of `ember-vmm`'s stderr (it reports why a VM
/// stopped in one line), read from at most the last 4 KiB.
pub(crate) fn last_log_line(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = f.take(4096).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}
