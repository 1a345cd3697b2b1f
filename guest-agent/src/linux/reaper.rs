//! Zombie reaping. PID 1 (and, in tests, the agent as a child subreaper)
//! inherits every orphaned process of the function and must wait for it. One
//! thread waits for any child; exits are reported to a callback so the agent
//! notices when the runtime itself dies.
//!
//! The thread peeks with `waitid(WNOWAIT)` and reaps only while holding the
//! spawn lock, so it never steals the status of a child that
//! `Command::spawn` is still waiting on after a failed `exec`.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

/// Called with the pid and the raw wait status of every reaped child.
pub type ExitSink = Box<dyn Fn(u32, i32) + Send>;

/// The reaper thread's shared state.
pub struct Reaper {
    spawn_lock: Mutex<()>,
    /// Spawns so far: wakes the thread when it ran out of children.
    spawned: Mutex<u64>,
    cv: Condvar,
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn start(on_exit: ExitSink) -> Arc<Reaper> {
        let reaper = Arc::new(Reaper {
            spawn_lock: Mutex::new(()),
            spawned: Mutex::new(0),
            cv: Condvar::new(),
        });
        let r = reaper.clone();
        thread::spawn(move || r.run(on_exit));
        reaper
    }

    /// Hold this while spawning a child; call [`Reaper::spawned`] after.
    pub fn spawn_guard(&self) -> MutexGuard<'_, ()> {
        self.spawn_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A child now exists: wake the thread if it had none.
    pub fn spawned(&self) {
        *self.spawned.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.cv.notify_all();
    }

    fn run(&self, on_exit: ExitSink) {
        let mut seen = 0u64;
        loop {
            // SAFETY: siginfo_t is plain data; all-zero is valid before waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid, writable siginfo_t for the call.
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => {
                        let mut n = self.spawned.lock().unwrap_or_else(|p| p.into_inner());
                        while *n == seen {
                            n = self.cv.wait(n).unwrap_or_else(|p| p.into_inner());
                        }
                        seen = *n;
                    }
                    _ => thread::sleep(std::time::Duration::from_millis(100)),
                }
                continue;
            }
            // SAFETY: waitid succeeded with WEXITED, so si_pid is the field set.
            let pid = unsafe { info.si_pid() };
            let _guard = self.spawn_guard();
            let mut status = 0;
            // SAFETY: plain waitpid on a pid reported above; `status` is writable.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid && pid > 0 {
                on_exit(pid as u32, status);
            }
        }
    }
}

/// Lambda's wording for how a process ended: "exit status 1", "signal: killed".
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let name = match sig {
            libc::SIGKILL => "killed",
            libc::SIGSEGV => "segmentation fault",
            libc::SIGABRT => "aborted",
            libc::SIGTERM => "terminated",
            _ => "",
        };
        if name.is_empty() {
            format!("signal: {sig}")
        } else {
            format!("signal: {name}")
        }
    } else {
        format!("wait status {status:#x}")
    }
}

/// Makes this process adopt orphaned descendants, as PID 1 does (tests run
/// the agent as an ordinary process and still want the same reaping).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
