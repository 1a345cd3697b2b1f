//! The function's runtime process (`bootstrap`) and everything hanging off
//! it: started in its own process group (and, inside a guest, its own cgroup)
//! so a timeout can kill the whole tree; its stdout/stderr pumped line by line
//! into `Log` frames; its peak memory measured for `Max Memory Used`.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::link::{HostLink, MAX_LOG_LINE};
use super::reaper::Reaper;
use ember_abi::protocol::LogStream;

/// Why the runtime could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("Couldn't find valid bootstrap(s): {0:?}")]
    NoBootstrap(Vec<PathBuf>),
    #[error("cannot start {}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Returns the first executable `bootstrap` among `dirs`.
pub fn find_bootstrap(dirs: &[&Path]) -> Result<PathBuf, RuntimeError> {
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join("bootstrap")).collect();
    candidates
        .iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .cloned()
        .ok_or(RuntimeError::NoBootstrap(candidates))
}

/// How to start the runtime.
pub struct RuntimeSpec {
    pub bootstrap: PathBuf,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Parent cgroup v2 directory for a per-instance cgroup, if any.
    pub cgroup_root: Option<PathBuf>,
}

/// A running runtime instance.
pub struct Runtime {
    pid: u32,
    cgroup: Option<PathBuf>,
    flush_tx: Sender<SyncSender<()>>,
    wake: UnixStream,
    peak_kib: AtomicU64,
}

impl Runtime {
    /// Starts `bootstrap`; `instance` names its cgroup.
    pub fn spawn(
        spec: &RuntimeSpec,
        instance: u64,
        reaper: &Reaper,
        link: Arc<HostLink>,
    ) -> Result<Runtime, RuntimeError> {
        let err = |source| RuntimeError::Spawn {
            path: spec.bootstrap.clone(),
            source,
        };
        let mut cmd = Command::new(&spec.bootstrap);
        cmd.env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.cwd)
            // A pipe closed at once instead of /dev/null, which a bare
            // runtime image may lack: the runtime reads EOF either way.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a timeout kills the tree with one kill(-pgid).
            .process_group(0);
        let child = {
            let _guard = reaper.spawn_guard();
            cmd.spawn().map_err(err)?
        };
        reaper.spawned();
        let pid = child.id();
        let cgroup = spec
            .cgroup_root
            .as_ref()
            .and_then(|root| join_cgroup(root, instance, pid));
        drop(child.stdin);
        let (stdout, stderr) = (child.stdout, child.stderr);
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(err)?;
        let (flush_tx, flush_rx) = mpsc::channel();
        if let (Some(out), Some(errp)) = (stdout, stderr) {
            thread::spawn(move || pump(out, errp, wake_rx, flush_rx, &link));
        }
        Ok(Runtime {
            pid,
            cgroup,
            flush_tx,
            wake: wake_tx,
            peak_kib: AtomicU64::new(0),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the runtime's whole process tree (group and cgroup).
    pub fn kill(&self) {
        if let Some(cg) = &self.cgroup {
            // cgroup.kill (Linux 5.14+) also reaches processes that left the group.
            let _ = fs::write(cg.join("cgroup.kill"), "1");
        }
        // SAFETY: kill(2) on our own child's process group; no memory involved.
        unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
    }

    /// Waits (up to 200 ms) until all output written so far has been sent,
    /// so an invocation's log lines precede its result.
    pub fn flush_output(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.flush_tx.send(ack_tx).is_err() || (&self.wake).write_all(&[1]).is_err() {
            return; // the pump is gone: both pipes hit EOF, nothing is pending
        }
        let _ = ack_rx.recv_timeout(Duration::from_millis(200));
    }

    /// Peak memory of the runtime in KiB: the cgroup's `memory.peak` inside a
    /// guest, else the main process's peak RSS; never decreases.
    pub fn max_memory_kib(&self) -> u64 {
        let cg = self
            .cgroup
            .as_ref()
            .and_then(|cg| fs::read_to_string(cg.join("memory.peak")).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(0, |b| b / 1024);
        let hwm = fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        let now = cg.max(hwm);
        self.peak_kib.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill();
        if let Some(cg) = &self.cgroup {
            let _ = fs::remove_dir(cg); // fails while members linger; harmless
        }
    }
}

/// Creates `root/rt-<instance>` and moves `pid` into it. `None` when cgroups
/// are unavailable: memory then falls back to the process's peak RSS.
fn join_cgroup(root: &Path, instance: u64, pid: u32) -> Option<PathBuf> {
    let dir = root.join(format!("rt-{instance}"));
    fs::create_dir_all(&dir).ok()?;
    fs::write(dir.join("cgroup.procs"), pid.to_string()).ok()?;
    Some(dir)
}

/// Line assembly for one output stream.
struct LineBuf {
    stream: LogStream,
    buf: Vec<u8>,
    open: bool,
}

impl LineBuf {
    /// Reads what is available (the fd is non-blocking) and sends full lines.
    fn read_available<R: Read>(&mut self, src: &mut R, link: &HostLink) {
        let mut chunk = [0u8; 8192];
        loop {
            match src.read(&mut chunk) {
                Ok(0) => {
                    self.open = false;
                    self.flush_partial(link);
                    return;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.send_lines(link);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.open = false;
                    return;
                }
            }
        }
    }

    fn send_lines(&mut self, link: &HostLink) {
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            link.log(self.stream, &line[..pos]);
        }
        if self.buf.len() >= MAX_LOG_LINE {
            let part: Vec<u8> = self.buf.drain(..MAX_LOG_LINE).collect();
            link.log(self.stream, &part);
        }
    }

    fn flush_partial(&mut self, link: &HostLink) {
        if !self.buf.is_empty() {
            let part = std::mem::take(&mut self.buf);
            link.log(self.stream, &part);
        }
    }
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a descriptor this thread owns; integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// The output pump: poll both pipes and the wake socket; on a flush request,
/// drain everything already written and acknowledge.
fn pump(
    mut out: ChildStdout,
    mut err: ChildStderr,
    mut wake: UnixStream,
    flush_rx: Receiver<SyncSender<()>>,
    link: &HostLink,
) {
    set_nonblocking(out.as_raw_fd());
    set_nonblocking(err.as_raw_fd());
    let _ = wake.set_nonblocking(true);
    let mut lines = [
        LineBuf {
            stream: LogStream::Stdout,
            buf: Vec::new(),
            open: true,
        },
        LineBuf {
            stream: LogStream::Stderr,
            buf: Vec::new(),
            open: true,
        },
    ];
    while lines[0].open || lines[1].open {
        let fds = [out.as_raw_fd(), err.as_raw_fd()];
        let mut pfds: Vec<libc::pollfd> = (0..2)
            .filter(|i| lines[*i].open)
            .map(|i| libc::pollfd {
                fd: fds[i],
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        pfds.push(libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `pfds` is a valid array of pollfd of the length passed.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == fds[0] {
                lines[0].read_available(&mut out, link);
            } else if p.fd == fds[1] {
                lines[1].read_available(&mut err, link);
            } else {
                let mut sink = [0u8; 64];
                while matches!(wake.read(&mut sink), Ok(n) if n > 0) {}
                if p.revents & libc::POLLHUP != 0 {
                    return; // the Runtime was dropped
                }
                for ack in flush_rx.try_iter() {
                    lines[0].read_available(&mut out, link);
                    lines[1].read_available(&mut err, link);
                    lines[0].flush_partial(link);
                    lines[1].flush_partial(link);
                    let _ = ack.send(());
                }
            }
        }
    }
}
