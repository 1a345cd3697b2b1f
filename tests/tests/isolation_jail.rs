//! Isolation promises of the seed for one jailed `ember-vmm` (real microVMs,
//! as root): what the jail, Landlock and seccomp each stop, seen from outside
//! (/proc) and from inside (the test-only `--test-hook` of a `test-hooks`
//! build, built once by this test), and that cgroup limits hold.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::os::unix::process::ExitStatusExt;

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let mut dir = exe.parent().expect("dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop(); // release/ or debug/
    dir
}

fn jailer() -> PathBuf {
    let p = std::env::current_exe()
        .expect("exe")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ember-jailer");
    assert!(
        p.exists(),
        "{} missing: cargo build --release --bins",
        p.display()
    );
    p
}

/// An `ember-vmm` built with `--features test-hooks` (once per test process).
fn hooks_vmm() -> &'static Path {
    static VMM: OnceLock<PathBuf> = OnceLock::new();
    VMM.get_or_init(|| {
        let dir = target_dir().join("test-hooks");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(cargo)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &dir)
            .args([
                "build",
                "--release",
                "-p",
                "ember-vmm",
                "--bin",
                "ember-vmm",
            ])
            .args(["--features", "test-hooks"])
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the test-hooks ember-vmm failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir.join("release/ember-vmm")
    })
}

/// Kernel-less guests this file needs (built once by build.sh).
fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let k = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-agent/kernelless");
        let out = Command::new("bash")
            .arg(k.join("build.sh"))
            .args(["--bin", "spin", "--bin", "hello", "--bin", "memhog"])
            .output()
            .expect("run build.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        k.join("target/x86_64-unknown-linux-gnu/release")
    });
    dir.join(name)
}

const BASE: &str = "/tmp/ember-isolation-jails";

fn unique_id(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{n}", std::process::id())
}

/// `ember-jailer` for guest `g` (mounted at /guest) with `jail` options and
/// `vmm` arguments.
fn jailed(id: &str, vmm: &Path, g: &str, jail: &[&str], vmm_args: &[&str]) -> Command {
    let mut c = Command::new(jailer());
    c.args(["--id", id, "--chroot-base", BASE, "--exec-file"])
        .arg(vmm)
        .arg("--file")
        .arg(format!("{}:/guest", guest(g).display()))
        .args(jail)
        .args(["--", "--kernel", "/guest", "--mem-mib", "64"])
        .args(vmm_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

struct Done {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run(mut c: Command) -> Done {
    let out = c.output().expect("spawn ember-jailer");
    Done {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn status_field(pid: i32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The VMM's host pid once every thread has its seccomp filter.
fn wait_sandboxed(pid_file: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| d.flatten().collect())
                .unwrap_or_default();
            let all_filtered = tasks.len() >= 3
                && tasks.iter().all(|t| {
                    std::fs::read_to_string(t.path().join("status"))
                        .is_ok_and(|s| s.contains("Seccomp:\t2"))
                });
            if all_filtered {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the jailed VMM never had all its threads filtered");
}

#[test]
fn jailed_vmm_runs_unprivileged_in_its_own_namespaces_cgroups_and_chroot() {
    let ids = [unique_id("ns-a"), unique_id("ns-b")];
    let mut children = Vec::new();
    let mut pids = Vec::new();
    for id in &ids {
        let pid_file = std::env::temp_dir().join(format!("{id}.pid"));
        let _ = std::fs::remove_file(&pid_file);
        let pf = pid_file.display().to_string();
        let mut c = jailed(
            id,
            hooks_vmm(),
            "spin",
            &[
                "--mem-limit-mib",
                "96",
                "--pids-max",
                "16",
                "--pid-file",
                &pf,
            ],
            &["--timeout-ms", "20000", "--console", "off"],
        );
        c.stdout(Stdio::null());
        children.push(c.spawn().expect("spawn jailer"));
        pids.push(wait_sandboxed(&pid_file));
    }
    let mut uids = Vec::new();
    for (pid, id) in pids.iter().zip(&ids) {
        let uid = status_field(*pid, "Uid");
        let first: u32 = uid
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap_or(0);
        assert!(first >= 1000, "VMM runs as uid {uid}");
        assert!(
            uid.split_whitespace().all(|u| u == first.to_string()),
            "{uid}"
        );
        uids.push(first);
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(status_field(*pid, cap), "0000000000000000", "{cap}");
        }
        assert_eq!(status_field(*pid, "NoNewPrivs"), "1");
        let filters: u32 = status_field(*pid, "Seccomp_filters").parse().unwrap_or(0);
        assert!(filters >= 2, "Seccomp_filters {filters}");
        // PID 1 of its own PID namespace.
        assert!(
            status_field(*pid, "NSpid").ends_with("\t1"),
            "{}",
            status_field(*pid, "NSpid")
        );
        for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns");
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns");
            assert_ne!(theirs, ours, "{ns} namespace shared with the host");
        }
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        assert!(cg.contains(&format!("/ember/{id}")), "cgroups: {cg}");
        let mem = Path::new("/sys/fs/cgroup/memory/ember")
            .join(id)
            .join("memory.limit_in_bytes");
        if mem.exists() {
            assert_eq!(
                std::fs::read_to_string(mem).expect("limit").trim(),
                (96u64 << 20).to_string()
            );
        }
        // Its root: only the VMM, its libraries, the guest and /dev/kvm.
        let root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
            .expect("root")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for host_only in [
            "etc", "proc", "home", "root", "tmp", "sys", "bin", "sbin", "var",
        ] {
            assert!(
                !root.iter().any(|e| e == host_only),
                "/{host_only} visible in the jail: {root:?}"
            );
        }
        assert!(
            root.iter().any(|e| e == "ember-vmm") && root.iter().any(|e| e == "guest"),
            "{root:?}"
        );
        let dev: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root/dev"))
            .expect("dev")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(dev, ["kvm"]);
    }
    assert_ne!(uids[0], uids[1], "two VMs share a uid");
    for (mut c, id) in children.into_iter().zip(&ids) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let status = c.wait().expect("wait");
        assert!(!status.success());
        assert!(!Path::new(BASE).join(id).exists(), "jail dir left behind");
        assert!(
            !Path::new("/sys/fs/cgroup/pids/ember").join(id).exists(),
            "cgroup left behind"
        );
    }
}

/// Runs `hook` on the vCPU thread of a jailed spin guest with `sandbox` flags.
fn hook(action: &str, sandbox: &[&str]) -> Done {
    let id = unique_id("hook");
    let h = format!("{action}@vcpu");
    let mut args = vec!["--timeout-ms", "400", "--console", "off", "--test-hook", &h];
    args.extend_from_slice(sandbox);
    run(jailed(&id, hooks_vmm(), "spin", &[], &args))
}

fn hook_line(d: &Done) -> String {
    d.stderr
        .lines()
        .find(|l| l.starts_with("ember-vmm test-hook:"))
        .unwrap_or_else(|| panic!("no hook line; status {:?}; stderr: {}", d.status, d.stderr))
        .to_string()
}

fn killed_by_sigsys(d: &Done) -> bool {
    d.status.signal() == Some(libc::SIGSYS) && !d.stderr.contains("ember-vmm test-hook:")
}

const NO_SECCOMP: &[&str] = &["--no-seccomp"];
const JAIL_ONLY: &[&str] = &["--no-seccomp", "--no-landlock"];

#[test]
fn jailed_vmm_cannot_open_host_files() {
    // Full sandbox: seccomp answers every open with EACCES.
    let full = hook_line(&hook("open-host-file", &[]));
    assert!(full.contains("/etc/passwd denied (EACCES)"), "{full}");
    assert!(full.contains("/ember-vmm denied (EACCES)"), "{full}");
    // Without seccomp: host paths do not exist in the jail, and Landlock
    // denies even the jail's own files.
    let landlock = hook_line(&hook("open-host-file", NO_SECCOMP));
    assert!(
        landlock.contains("/etc/passwd denied (ENOENT)"),
        "{landlock}"
    );
    assert!(
        landlock.contains("/ember-vmm denied (EACCES)"),
        "{landlock}"
    );
    // The jail alone: host files are simply not there.
    let jail = hook_line(&hook("open-host-file", JAIL_ONLY));
    assert!(jail.contains("/etc/passwd denied (ENOENT)"), "{jail}");
    assert!(jail.contains("/proc/1/status denied (ENOENT)"), "{jail}");
    assert!(jail.contains("/ember-vmm ALLOWED"), "{jail}");
}

#[test]
fn jailed_vmm_cannot_exec() {
    assert!(killed_by_sigsys(&hook("exec", &[])));
    let line = hook_line(&hook("exec", NO_SECCOMP));
    assert!(line.contains(": denied ("), "{line}");
    let line = hook_line(&hook("exec", JAIL_ONLY));
    assert!(line.ends_with("denied (ENOENT)"), "{line}");
}

#[test]
fn jailed_vmm_cannot_create_network_sockets() {
    assert!(killed_by_sigsys(&hook("inet-socket", &[])));
    assert!(hook_line(&hook("inet-socket", NO_SECCOMP)).contains("connect denied (EACCES)"));
    // Jail only: its network namespace is empty, nothing is reachable.
    assert!(hook_line(&hook("inet-socket", JAIL_ONLY)).contains("connect denied (ENETUNREACH)"));
}

#[test]
fn jailed_vmm_cannot_see_host_processes() {
    assert!(hook_line(&hook("host-procs", JAIL_ONLY)).contains("/proc denied (ENOENT)"));
    let line = hook_line(&hook("host-procs", NO_SECCOMP));
    assert!(line.contains("/proc denied ("), "{line}");
    // From outside: it is PID 1 of its own namespace (the namespaces test).
}

#[test]
fn syscall_outside_allowlist_kills_vmm_with_sigsys() {
    for kind in ["vcpu", "event-loop", "main"] {
        let h = format!("forbidden-syscall@{kind}");
        let id = unique_id("sigsys");
        let d = run(jailed(
            &id,
            hooks_vmm(),
            "spin",
            &[],
            &[
                "--timeout-ms",
                "3000",
                "--console",
                "off",
                "--test-hook",
                &h,
            ],
        ));
        assert!(killed_by_sigsys(&d), "{kind}: {:?} {}", d.status, d.stderr);
        assert!(
            !Path::new(BASE).join(&id).exists(),
            "jail left behind after SIGSYS"
        );
        // Unjailed, the same.
        let out = Command::new(hooks_vmm())
            .args(["--kernel"])
            .arg(guest("spin"))
            .args([
                "--mem-mib",
                "64",
                "--timeout-ms",
                "3000",
                "--console",
                "off",
                "--test-hook",
                &h,
            ])
            .output()
            .expect("spawn");
        assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{kind} unjailed");
    }
    // Without the flag the same VM runs to its timeout (exit 124).
    let d = run(jailed(
        &unique_id("nohook"),
        hooks_vmm(),
        "spin",
        &[],
        &["--timeout-ms", "300", "--console", "off"],
    ));
    assert_eq!(d.status.code(), Some(124), "{}", d.stderr);
}

/// A jailed run of guest `g` under the cgroup options `limit`.
fn limited(g: &str, limit: &[&str], vmm_args: &[&str]) -> Done {
    run(jailed(&unique_id("limit"), hooks_vmm(), g, limit, vmm_args))
}

#[test]
fn cgroup_memory_limit_holds() {
    let over = limited("memhog", &["--mem-limit-mib", "40"], &["--cmdline", "48"]);
    assert_eq!(
        over.status.signal(),
        Some(libc::SIGKILL),
        "{:?} {}",
        over.status,
        over.stderr
    );
    assert!(!over.stdout.contains("touched"), "{}", over.stdout);
    let under = limited("memhog", &["--mem-limit-mib", "96"], &["--cmdline", "48"]);
    assert_eq!(under.status.code(), Some(0), "{}", under.stderr);
    assert!(
        under.stdout.contains("memhog: touched 48 MiB"),
        "{}",
        under.stdout
    );
}

#[test]
fn cgroup_pids_limit_holds() {
    // main + event loop + 4 vCPU threads = 6 tasks.
    let over = limited("hello", &["--pids-max", "3"], &["--vcpus", "4"]);
    assert_eq!(
        over.status.code(),
        Some(1),
        "{:?} {}",
        over.status,
        over.stderr
    );
    assert!(!over.stdout.contains("hello from ember"), "{}", over.stdout);
    let under = limited("hello", &["--pids-max", "16"], &["--vcpus", "4"]);
    assert_eq!(under.status.code(), Some(0), "{}", under.stderr);
    assert!(
        under.stdout.contains("hello from ember"),
        "{}",
        under.stdout
    );
}

/// The plain release `ember-vmm` next to the jailer (no test hooks needed).
fn plain_vmm() -> PathBuf {
    jailer().with_file_name("ember-vmm")
}

/// A fresh host directory for one test's files.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique_id(tag));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

#[test]
fn file_rw_refuses_a_symlink_and_chowns_nothing() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = scratch("symlink-host");
    // Stands for a host file such as /etc/shadow that a link, planted where
    // a VM's disk image is expected, names.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"host secret").expect("write victim");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.join("disk.img");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let id = unique_id("symlink");
    let d = run(jailed(
        &id,
        &plain_vmm(),
        "hello",
        &["--file-rw", &format!("{}:/disk", link.display())],
        &[],
    ));
    let meta = std::fs::metadata(&victim).expect("victim");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "the jailer chowned what the link names; {}",
        d.stderr
    );
    assert_ne!(d.status.code(), Some(0), "a symlinked image was accepted");
    assert!(d.stderr.contains("symlink"), "{}", d.stderr);
    assert!(!Path::new(BASE).join(&id).exists(), "jail left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_jail_leaves_no_directory_behind() {
    let dir = scratch("failed-host");
    let missing = dir.join("missing.img");
    let not_file = dir.join("a-directory");
    std::fs::create_dir(&not_file).expect("mkdir");
    let cases: [(&str, Vec<String>); 3] = [
        (
            "missing.img",
            vec!["--file".into(), format!("{}:/disk", missing.display())],
        ),
        (
            "not a regular file",
            vec!["--file-rw".into(), format!("{}:/disk", not_file.display())],
        ),
        (
            "network namespace",
            vec!["--netns".into(), missing.display().to_string()],
        ),
    ];
    for (why, args) in cases {
        let id = unique_id("failed");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = run(jailed(&id, &plain_vmm(), "hello", &args, &[]));
        assert_ne!(d.status.code(), Some(0), "{why}: the jail was built");
        assert!(d.stderr.contains(why), "expected {why:?}: {}", d.stderr);
        // Its /dev/kvm node would belong to the uid this jailer released.
        let jail = Path::new(BASE).join(&id);
        assert!(
            !jail.exists(),
            "{why}: {} left behind (dev/kvm: {})",
            jail.display(),
            jail.join("root/dev/kvm").exists()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
