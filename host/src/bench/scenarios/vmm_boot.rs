//! `ember bench vmm-boot`: exec → guest exit (and the boot-timer figure) for
//! the same null guest under each VMM, with peak RSS: ember-vmm with the
//! kernel-less null guest and with the PVH null guest, QEMU `-M microvm`
//! with the PVH null guest (KVM when it runs here, else TCG, said loudly),
//! and any Firecracker-compatible binary named with `--peer NAME=PATH`, fed
//! the same generated Firecracker-format config as ember-vmm
//! (`--no-api --config-file vm.json --boot-timer`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::guest;
use super::super::process::{self, GNU_TIME};
use super::super::record::Sample;
use super::super::runner::Scenario;
use super::ScenarioError;

#[derive(Debug, Clone, clap::Args)]
pub struct VmmBootArgs {
    /// The ember-vmm binary (default: the one next to this `ember`).
    #[arg(long)]
    pub vmm: Option<PathBuf>,
    /// The kernel-less null guest (default: guest-agent/kernelless's build
    /// output in this `ember`'s source tree; `bash
    /// guest-agent/kernelless/build.sh --bin null` makes it).
    #[arg(long, env = "EMBER_NULL_KERNELLESS")]
    pub kernelless: Option<PathBuf>,
    /// QEMU (default: qemu-system-x86_64 on PATH).
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Leave QEMU out.
    #[arg(long)]
    pub no_qemu: bool,
    /// Another Firecracker-compatible VMM, NAME=PATH (repeatable), run as
    /// `PATH --no-api --config-file vm.json --boot-timer`.
    #[arg(long = "peer", value_name = "NAME=PATH")]
    pub peers: Vec<String>,
    /// Leave out the `/bin/true` case (the exec + launcher floor).
    #[arg(long)]
    pub no_floor: bool,
    /// A run still going after this many ms is killed and counted failed.
    #[arg(long, default_value_t = 10_000)]
    pub deadline_ms: u64,
}

/// One VMM + guest pair.
struct Case {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    /// The status that proves the guest ran to its end.
    expect_exit: i32,
}

pub struct VmmBoot {
    cases: Vec<Case>,
    scratch: PathBuf,
    gnu_time: bool,
    deadline: Duration,
    /// Cases that could not even be set up (bad peer path): reported as
    /// failed runs of their own.
    broken: Vec<(String, String)>,
}

/// The kernel-less null guest's default place, relative to this binary
/// (target/release/ember in a source tree), then to the working directory.
fn default_kernelless() -> Option<PathBuf> {
    const REL: &str = "guest-agent/kernelless/target/x86_64-unknown-linux-gnu/release/null";
    let exe = std::env::current_exe().ok()?;
    let from_exe = exe.parent()?.parent()?.parent().map(|repo| repo.join(REL));
    from_exe
        .into_iter()
        .chain([PathBuf::from(REL)])
        .find(|p| p.exists())
}

/// `program`'s full path on PATH (or itself when it names a file).
fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn qemu_args(accel: &str, kernel: &Path) -> Vec<String> {
    let mut a = strings(&[
        "-M",
        "microvm",
        "-accel",
        accel,
        "-m",
        "128",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-kernel",
    ]);
    a.push(kernel.display().to_string());
    a
}

/// `PATH --no-api --config-file CFG --boot-timer`: the Firecracker flags.
fn firecracker_args(config: &Path) -> Vec<String> {
    vec![
        "--no-api".into(),
        "--config-file".into(),
        config.display().to_string(),
        "--boot-timer".into(),
    ]
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl VmmBoot {
    /// Sets the cases up; `notes` gets what the reader must know (a missing
    /// guest, QEMU falling back to TCG or failing).
    pub fn new(a: &VmmBootArgs, notes: &mut Vec<String>) -> Result<VmmBoot, ScenarioError> {
        let scratch = std::env::temp_dir().join(format!("ember-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).map_err(|e| ScenarioError::Io(scratch.clone(), e))?;
        let io = |p: &Path, e| ScenarioError::Io(p.into(), e);
        let gnu_time = Path::new(GNU_TIME).exists();
        if !gnu_time {
            notes.push(format!(
                "{GNU_TIME} is missing: peak RSS is wait4's ru_maxrss of a child of `ember`, which includes ember's own high-water mark (apt-get install time)"
            ));
        }
        let vmm = match &a.vmm {
            Some(v) => v.clone(),
            None => std::env::current_exe()
                .map_err(|e| io(Path::new("/proc/self/exe"), e))?
                .with_file_name("ember-vmm"),
        };
        if !is_executable(&vmm) {
            return Err(ScenarioError::Missing(format!(
                "ember-vmm not found at {} (--vmm PATH)",
                vmm.display()
            )));
        }
        let pvh = guest::write_pvh_null(&scratch).map_err(|e| io(&scratch, e))?;
        let write_config = |name: &str, kernel: &Path| -> Result<PathBuf, ScenarioError> {
            let p = scratch.join(name);
            std::fs::write(&p, guest::firecracker_config(kernel).to_string())
                .map_err(|e| io(&p, e))?;
            Ok(p)
        };
        let pvh_config = write_config("vm-pvh.json", &pvh)?;
        let mut cases = Vec::new();
        match a.kernelless.clone().or_else(default_kernelless) {
            Some(k) if k.exists() => {
                let cfg = write_config("vm-kernelless.json", &k)?;
                cases.push(Case {
                    label: "ember-vmm, kernel-less null".into(),
                    program: vmm.clone(),
                    args: firecracker_args(&cfg),
                    expect_exit: 0,
                });
            }
            other => notes.push(format!(
                "no kernel-less null guest{}: that case is left out (bash guest-agent/kernelless/build.sh --bin null, or --kernelless PATH)",
                other.map(|p| format!(" at {}", p.display())).unwrap_or_default()
            )),
        }
        cases.push(Case {
            label: "ember-vmm, PVH null".into(),
            program: vmm.clone(),
            args: firecracker_args(&pvh_config),
            expect_exit: 0,
        });
        if !a.no_qemu {
            match which(&a.qemu) {
                None => notes.push(format!(
                    "QEMU ({}) not found: no QEMU case (Debian: apt-get install qemu-system-x86)",
                    a.qemu
                )),
                Some(q) => {
                    if let Some(c) = qemu_case(&q, &pvh, &scratch, gnu_time, notes) {
                        cases.push(c);
                    }
                }
            }
        }
        let mut broken = Vec::new();
        for spec in &a.peers {
            let Some((name, path)) = spec.split_once('=') else {
                return Err(ScenarioError::Usage(format!(
                    "--peer {spec:?} must be NAME=PATH (e.g. firecracker=/usr/local/bin/firecracker)"
                )));
            };
            let label = format!("{name}, PVH null");
            let path = PathBuf::from(path);
            if !is_executable(&path) {
                let why = format!("peer {name}: {} is not an executable file", path.display());
                eprintln!("bench: {why}; the other cases go on");
                broken.push((label, why));
                continue;
            }
            cases.push(Case {
                label,
                program: path,
                args: firecracker_args(&pvh_config),
                expect_exit: 0,
            });
        }
        if !a.no_floor {
            cases.push(Case {
                label: "floor: exec /bin/true".into(),
                program: "/bin/true".into(),
                args: vec![],
                expect_exit: 0,
            });
        }
        Ok(VmmBoot {
            cases,
            scratch,
            gnu_time,
            deadline: Duration::from_millis(a.deadline_ms),
            broken,
        })
    }

    /// Peers that could not be set up, with why.
    pub fn broken(&self) -> &[(String, String)] {
        &self.broken
    }
}

impl Drop for VmmBoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// QEMU's case: `-accel kvm` if it runs the PVH null guest to its end here,
/// else TCG (noted: TCG figures are emulation, not a VMM comparison), else
/// none (noted, with QEMU's own last words).
fn qemu_case(
    qemu: &Path,
    pvh: &Path,
    scratch: &Path,
    gnu_time: bool,
    notes: &mut Vec<String>,
) -> Option<Case> {
    let mut failures = Vec::new();
    for accel in ["kvm", "tcg"] {
        let args = qemu_args(accel, pvh);
        match process::run(qemu, &args, scratch, gnu_time, Duration::from_secs(20)) {
            Ok(r) if r.exit == Some(99) => {
                if accel == "tcg" {
                    notes.push(format!(
                        "QEMU -accel kvm failed here ({}); QEMU ran with TCG: its figures are emulation, not a like-for-like VMM comparison",
                        failures.join("; ")
                    ));
                }
                return Some(Case {
                    label: format!("QEMU microvm -accel {accel}, PVH null"),
                    program: qemu.into(),
                    args,
                    expect_exit: 99,
                });
            }
            Ok(r) => failures.push(format!(
                "-accel {accel}: exit {} ({})",
                r.exit
                    .map_or("killed at the deadline".into(), |c| c.to_string()),
                r.tail()
            )),
            Err(e) => failures.push(format!("-accel {accel}: {}", crate::util::error_chain(&e))),
        }
    }
    let why = format!(
        "PEER FAILED: QEMU could not run the PVH null guest with KVM or TCG: {}",
        failures.join("; ")
    );
    eprintln!("bench: {why}");
    notes.push(why);
    None
}

impl Scenario for VmmBoot {
    fn name(&self) -> &'static str {
        "vmm-boot"
    }

    fn cases(&self) -> Vec<String> {
        self.cases.iter().map(|c| c.label.clone()).collect()
    }

    async fn once(&mut self, case: usize) -> Vec<Sample> {
        let Some(c) = self.cases.get(case) else {
            return vec![Sample::failed("no such case")];
        };
        let r = match process::run(
            &c.program,
            &c.args,
            &self.scratch,
            self.gnu_time,
            self.deadline,
        ) {
            Ok(r) => r,
            Err(e) => return vec![Sample::failed(crate::util::error_chain(&e))],
        };
        let error = match r.exit {
            Some(code) if code == c.expect_exit => None,
            Some(code) => Some(format!(
                "exit status {code} (the guest's end is {}): {}",
                c.expect_exit,
                r.tail()
            )),
            None => Some(format!(
                "still running after {} ms, killed: {}",
                self.deadline.as_millis(),
                r.tail()
            )),
        };
        vec![Sample {
            wall_ms: Some(r.wall_ms),
            peak_rss_kib: r.peak_rss_kib,
            boot_timer_ms: process::boot_timer_ms(&r.output),
            error,
            ..Sample::default()
        }]
    }
}
