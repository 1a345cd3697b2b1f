//! `ember bench snapshot-restore`: through ember-vmm's Firecracker API
//! socket, `PUT /snapshot/load` (File backend, `resume_vm`) of a 128 MiB
//! kernel-less guest (`snap_guest ready quiet`: it exits at its first step
//! after a load) → guest exit, against a fresh boot of the same guest through
//! the same socket (`PUT /boot-source`, `/machine-config`, `/actions
//! InstanceStart`; `snap_guest exit`) → guest exit. Each run is a new
//! `ember-vmm --api-sock`; the timer starts once the socket accepts. Phases:
//! `api` (the calls, up to the last 204) and `run` (→ exit).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::UnixStream;

use super::super::record::{Phase, Sample};
use super::super::runner::Scenario;
use super::ScenarioError;

/// The guest's exit status in both cases (`snap_guest` exits with 7).
const GUEST_EXIT: i32 = 7;

#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotArgs {
    /// The ember-vmm binary (default: the one next to this `ember`).
    #[arg(long)]
    pub vmm: Option<PathBuf>,
    /// The snapshot test guest (default: guest-agent/kernelless's
    /// `snap_guest` in this `ember`'s source tree).
    #[arg(long, env = "EMBER_SNAP_GUEST")]
    pub snap_guest: Option<PathBuf>,
    /// A run still going after this many ms is killed and counted failed.
    #[arg(long, default_value_t = 10_000)]
    pub deadline_ms: u64,
}

pub struct SnapshotRestore {
    vmm: PathBuf,
    guest: PathBuf,
    dir: PathBuf,
    deadline: Duration,
    run: u64,
}

/// One HTTP/1.1 request over a Unix socket; the status and body.
async fn api(sock: &Path, method: &str, path: &str, body: Value) -> Result<(u16, String), String> {
    let stream = UnixStream::connect(sock)
        .await
        .map_err(|e| format!("connect {}: {e}", sock.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn put(sock: &Path, method: &str, path: &str, body: Value) -> Result<(), String> {
    match api(sock, method, path, body).await? {
        (s, _) if s < 300 => Ok(()),
        (s, b) => Err(format!("{method} {path}: HTTP {s} {b}")),
    }
}

impl SnapshotRestore {
    pub async fn new(a: &SnapshotArgs) -> Result<Self, ScenarioError> {
        let exe =
            std::env::current_exe().map_err(|e| ScenarioError::Io("/proc/self/exe".into(), e))?;
        let vmm = a
            .vmm
            .clone()
            .unwrap_or_else(|| exe.with_file_name("ember-vmm"));
        let guest = a.snap_guest.clone().unwrap_or_else(|| {
            super::emberd::in_tree(
                "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/snap_guest",
            )
        });
        for (what, p) in [
            ("ember-vmm", &vmm),
            (
                "the snap_guest guest (bash guest-agent/kernelless/build.sh --bin snap_guest)",
                &guest,
            ),
        ] {
            if !p.exists() {
                return Err(ScenarioError::Missing(format!(
                    "{what} not found at {}",
                    p.display()
                )));
            }
        }
        let dir = std::env::temp_dir().join(format!("ember-bench-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| ScenarioError::Io(dir.clone(), e))?;
        let mut s = SnapshotRestore {
            vmm,
            guest,
            dir,
            deadline: Duration::from_millis(a.deadline_ms),
            run: 0,
        };
        s.make_snapshot().await.map_err(ScenarioError::Api)?;
        Ok(s)
    }

    /// Starts `ember-vmm --api-sock` and waits until the socket accepts.
    async fn spawn(&mut self, name: &str) -> Result<(Child, PathBuf), String> {
        let sock = self.dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(&self.vmm)
            .arg("--api-sock")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.vmm.display()))?;
        let t = Instant::now();
        while UnixStream::connect(&sock).await.is_err() {
            if t.elapsed() > Duration::from_secs(5) {
                return Err(format!(
                    "{} never accepted on {}",
                    self.vmm.display(),
                    sock.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok((child, sock))
    }

    fn paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("vm.state"), self.dir.join("vm.mem"))
    }

    /// Boots `snap_guest ready quiet`, waits for `ready`, pauses, creates
    /// a Full snapshot.
    async fn make_snapshot(&mut self) -> Result<(), String> {
        let serial = self.dir.join("first.serial");
        let (mut child, sock) = self.spawn("first").await?;
        let guest = self.guest.display().to_string();
        let result = async {
            put(&sock, "PUT", "/serial", json!({"serial_out_path": serial.display().to_string()})).await?;
            put(&sock, "PUT", "/boot-source", json!({"kernel_image_path": guest, "boot_args": "ready quiet"})).await?;
            put(&sock, "PUT", "/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 128})).await?;
            put(&sock, "PUT", "/actions", json!({"action_type": "InstanceStart"})).await?;
            let t = Instant::now();
            while !std::fs::read_to_string(&serial).unwrap_or_default().contains("ready") {
                if t.elapsed() > Duration::from_secs(10) {
                    return Err("the guest never printed `ready`".to_string());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            put(&sock, "PATCH", "/vm", json!({"state": "Paused"})).await?;
            let (state, mem) = self.paths();
            put(&sock, "PUT", "/snapshot/create", json!({"snapshot_path": state.display().to_string(), "mem_file_path": mem.display().to_string(), "snapshot_type": "Full"})).await
        }
        .await;
        let _ = child.kill();
        let _ = child.wait();
        result
    }

    async fn once_inner(&mut self, load: bool) -> Result<Sample, String> {
        self.run += 1;
        let (mut child, sock) = self.spawn(&format!("run{}", self.run)).await?;
        let t0 = Instant::now();
        let calls = async {
            if load {
                let (state, mem) = self.paths();
                put(&sock, "PUT", "/snapshot/load", json!({"snapshot_path": state.display().to_string(), "mem_backend": {"backend_type": "File", "backend_path": mem.display().to_string()}, "resume_vm": true})).await
            } else {
                let guest = self.guest.display().to_string();
                put(&sock, "PUT", "/boot-source", json!({"kernel_image_path": guest, "boot_args": "exit"})).await?;
                put(&sock, "PUT", "/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 128})).await?;
                put(&sock, "PUT", "/actions", json!({"action_type": "InstanceStart"})).await
            }
        }
        .await;
        let api_ms = t0.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = calls {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let pid = child.id() as libc::pid_t;
        let waited = tokio::time::timeout(
            self.deadline,
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await;
        let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
        let _ = std::fs::remove_file(&sock);
        let status = match waited {
            Ok(Ok(Ok(s))) => s,
            Ok(_) => return Err("waiting for ember-vmm failed".into()),
            Err(_) => {
                // SAFETY: kill(2) of our own child (its waiter thread reaps it).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err(format!(
                    "the guest did not exit within {} ms",
                    self.deadline.as_millis()
                ));
            }
        };
        let mut s = Sample {
            wall_ms: Some(wall_ms),
            phases: vec![
                Phase {
                    name: "api".into(),
                    ms: api_ms,
                },
                Phase {
                    name: "run".into(),
                    ms: wall_ms - api_ms,
                },
            ],
            ..Sample::default()
        };
        if status.code() != Some(GUEST_EXIT) {
            s.error = Some(format!(
                "ember-vmm ended with {status} (the guest's end is exit {GUEST_EXIT})"
            ));
        }
        Ok(s)
    }
}

impl Drop for SnapshotRestore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Scenario for SnapshotRestore {
    fn name(&self) -> &'static str {
        "snapshot-restore"
    }

    fn cases(&self) -> Vec<String> {
        vec![
            "ember-vmm, snapshot load → exit".into(),
            "ember-vmm, fresh boot via API → exit".into(),
        ]
    }

    async fn once(&mut self, case: usize) -> Vec<Sample> {
        match self.once_inner(case == 0).await {
            Ok(s) => vec![s],
            Err(e) => vec![Sample::failed(e)],
        }
    }
}
