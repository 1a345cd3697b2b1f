//! Helpers for the Linux guest tests (`tests/tests/linux_*.rs`): running the
//! cached kernel/image build scripts, making code images from ZIPs, and
//! invocation requests.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_host::env::AgentConn;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a build script of the repository (`kernel-config/build.sh`,
/// `images/build-images.sh`) and returns the path it printed last.
pub fn build(script: &str, args: &[&str]) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(text.lines().last().unwrap_or("").trim())
}

/// Fails the test (never skips it) unless /dev/kvm is hardware-backed KVM:
/// the Linux tests are `#[ignore]`d by default and run where they can,
/// by tests/hvhost (directly, or inside its nested SVM layer).
pub fn require_hardware_kvm() {
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let hw =
        Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists();
    assert!(
        Path::new("/dev/kvm").exists() && hw && !pvm,
        "this test boots Linux and needs hardware-backed KVM (kvm_intel/kvm_amd, not PVM): \
         run it with tests/hvhost/hvhost.sh, which provides one"
    );
}

/// A free TCP port on loopback (for an agent's Runtime API).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The host end of an agent that connects to `listener` within 10 s and
/// announces itself with `Ready`; `what` names the agent in a failure.
pub fn accept_agent(listener: &UnixListener, what: &str) -> AgentConn<UnixStream> {
    listener.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("{what} did not connect: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    AgentConn::handshake(stream, Duration::from_secs(10)).expect("Ready")
}

/// Writes a ZIP of (name, unix mode, contents) entries with python3's zipfile.
pub fn write_zip(path: &Path, entries: &[(&str, u32, &str)]) {
    let mut py = String::from("import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\n");
    for (name, mode, text) in entries {
        py.push_str(&format!(
            "i = zipfile.ZipInfo({name:?}); i.external_attr = {mode} << 16\nz.writestr(i, {text:?})\n"
        ));
    }
    py.push_str("z.close()\n");
    let st = Command::new("python3")
        .args(["-c", &py])
        .arg(path)
        .status()
        .expect("python3");
    assert!(st.success(), "writing {}", path.display());
}

/// `images/code-image.sh zip out`: whether it succeeded.
pub fn code_image(zip: &Path, out: &Path) -> bool {
    Command::new("bash")
        .arg(repo().join("images/code-image.sh"))
        .arg(zip)
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Zips `entries` into `dir/<name>.zip` and converts it to `dir/<name>.squashfs`.
pub fn code_image_of(dir: &Path, name: &str, entries: &[(&str, u32, &str)]) -> PathBuf {
    let zip = dir.join(format!("{name}.zip"));
    write_zip(&zip, entries);
    let img = dir.join(format!("{name}.squashfs"));
    assert!(
        code_image(&zip, &img),
        "images/code-image.sh failed for {name}"
    );
    img
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A busybox-wget Lambda runtime for the `provided` image (which has no curl):
/// echoes the event with the kernel release, PID 1's name and /var/task's
/// listing; an event containing "sleep" hangs (for timeout tests).
pub const BUSYBOX_BOOTSTRAP: &str = "#!/bin/sh\n\
api=http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime\n\
while true; do\n\
  wget -S -q -O /tmp/ev $api/invocation/next 2> /tmp/hdrs\n\
  id=$(grep -i 'Lambda-Runtime-Aws-Request-Id' /tmp/hdrs | sed 's/.*: *//' | tr -d '\\r')\n\
  echo \"guest got $id\"\n\
  case \"$(cat /tmp/ev)\" in\n\
    *sleep*) sleep 600 ;;\n\
  esac\n\
  printf '{\"kernel\":\"%s\",\"pid1\":\"%s\",\"task\":\"%s\",\"sh\":\"%s\",\"event\":%s}' \"$(uname -r)\" \
\"$(cat /proc/1/comm 2>/tmp/err)\" \"$(ls /var/task)\" \"$(readlink /bin/sh)\" \"$(cat /tmp/ev)\" > /tmp/out\n\
  wget -q -O /tmp/resp --post-file=/tmp/out $api/invocation/$id/response\n\
done\n";
