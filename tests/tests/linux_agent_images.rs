//! The runtime images as the agent sees them after switch_root: each image is
//! unpacked, the static `ember-agent` from the initramfs build runs inside it
//! under chroot (root needed) with its host transport on a Unix socket driven
//! by ember-host's `AgentConn`, and a function runs on the image's own
//! userland — busybox + glibc for `provided`, Debian's python3.11 with AWS's
//! runtime interface client (awslambdaric) and boto3 for `python3.11`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ember_host::env::{AgentConn, Code, InitSpec, InvokeRequest, LogStream};
use ember_tests::linux_guest::{
    accept_agent, build, code_image, free_port, unix_ms, write_zip, BUSYBOX_BOOTSTRAP,
};

fn build_images(args: &[&str]) -> PathBuf {
    build("images/build-images.sh", args)
}

/// An unpacked image with the agent inside, removed on drop.
struct Root {
    dir: PathBuf,
    child: Option<Child>,
}

impl Root {
    fn unpack(images: &Path, image: &str) -> Root {
        let dir = std::env::temp_dir().join(format!("ember-img-{}-{image}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let st = Command::new("unsquashfs")
            .args(["-q", "-n", "-d"])
            .arg(&dir)
            .arg(images.join(format!("{image}.squashfs")))
            .stdout(Stdio::null())
            .status()
            .expect("unsquashfs (squashfs-tools)");
        assert!(st.success(), "unsquashfs {image}");
        fs::copy(images.join("ember-agent"), dir.join("ember-agent")).unwrap();
        Root { dir, child: None }
    }

    fn put(&self, path: &str, mode: u32, text: &str) {
        let p = self.dir.join(path.trim_start_matches('/'));
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Starts the agent chrooted into the image; returns the host end.
    fn start(&mut self) -> AgentConn<std::os::unix::net::UnixStream> {
        let listener = UnixListener::bind(self.dir.join("host.sock")).unwrap();
        let port = free_port();
        let child = Command::new("/usr/sbin/chroot")
            .arg(&self.dir)
            .args(["/ember-agent", "--unix", "/host.sock", "--runtime-api"])
            .arg(format!("127.0.0.1:{port}"))
            // The agent hands its PATH to the runtime; inside the image this one fits.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .spawn()
            .expect("chroot");
        self.child = Some(child);
        accept_agent(&listener, "agent in chroot")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spec(handler: &str) -> InitSpec {
    InitSpec {
        function_name: "img-fn".into(),
        function_version: "1".into(),
        handler: handler.into(),
        code: Code::Path("/var/task".into()),
        env: vec![],
        memory_mib: 128,
        timeout_ms: 20_000,
        random_seed: None,
        trees: Vec::new(),
        ephemeral_mib: 0,
    }
}

fn request(id: &str, payload: &[u8]) -> InvokeRequest {
    InvokeRequest {
        request_id: id.into(),
        payload: payload.to_vec().into(),
        deadline_ms: unix_ms() + 20_000,
        ..Default::default()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn provided_image_runs_a_busybox_function() {
    assert!(
        is_root(),
        "this test chroots into the image: run it as root (scripts/test.sh does)"
    );
    let images = build_images(&[]);
    let mut root = Root::unpack(&images, "provided");
    root.put("/var/task/bootstrap", 0o755, BUSYBOX_BOOTSTRAP);
    let mut conn = root.start();
    conn.init(&spec("unused"), Duration::from_secs(20))
        .expect("init");
    let inv = conn
        .invoke(&request("img-1", br#"{"n":5}"#), Duration::from_secs(30))
        .expect("invoke");
    let v: serde_json::Value =
        serde_json::from_slice(&inv.result.clone().expect("response")).expect("json");
    assert_eq!(v["event"]["n"], 5);
    assert!(
        v["sh"].as_str().is_some_and(|s| s.contains("busybox")),
        "{v}"
    );
    assert!(inv
        .logs
        .lines
        .iter()
        .any(|l| l.stream == LogStream::Stdout && l.line == "guest got img-1"));
    // A dynamically linked glibc program from the image's loader and libc.
    let libc = root.dir.join("usr/lib/x86_64-linux-gnu/libc.so.6");
    assert!(libc.exists(), "glibc missing from the provided image");
    conn.shutdown().unwrap();
}

#[test]
fn python_image_runs_a_handler_with_awslambdaric_and_boto3() {
    assert!(
        is_root(),
        "this test chroots into the image: run it as root (scripts/test.sh does)"
    );
    // Builds (once, cached) the mmdebstrap image if setup did not.
    let images = build_images(&["--python"]);
    let mut root = Root::unpack(&images, "python3.11");
    root.put(
        "/var/task/app.py",
        0o644,
        "import sys, boto3, awslambdaric\ndef handler(event, context):\n    print('py in image')\n    \
         return {'v': sys.version_info[:2], 'double': event['x'] * 2, 'fn': context.function_name,\n    \
         'boto3': boto3.__version__, 'ric': awslambdaric.__file__}\n",
    );
    let mut conn = root.start();
    conn.init(&spec("app.handler"), Duration::from_secs(20))
        .expect("init");
    let inv = conn
        .invoke(&request("img-py", br#"{"x":4}"#), Duration::from_secs(30))
        .expect("invoke");
    let v: serde_json::Value =
        serde_json::from_slice(&inv.result.clone().expect("response")).expect("json");
    assert_eq!(v["v"], serde_json::json!([3, 11]));
    assert_eq!(v["double"], 8);
    assert_eq!(v["fn"], "img-fn");
    assert!(v["boto3"].as_str().is_some_and(|b| !b.is_empty()), "{v}");
    assert_eq!(
        v["ric"], "/var/runtime/awslambdaric/__init__.py",
        "AWS's client from the image"
    );
    assert!(
        inv.logs.lines.iter().any(|l| l.line == "py in image"),
        "{:?}",
        inv.logs.lines
    );
    conn.shutdown().unwrap();
}

#[test]
fn code_image_keeps_modes_and_refuses_escapes() {
    let dir = std::env::temp_dir().join(format!("ember-zip-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.zip");
    write_zip(
        &good,
        &[
            ("bootstrap", 0o100755, "x"),
            ("lib/data.txt", 0o100644, "x"),
        ],
    );
    let img = dir.join("good.squashfs");
    assert!(code_image(&good, &img), "a plain function ZIP must convert");
    let listing = Command::new("unsquashfs")
        .arg("-ll")
        .arg(&img)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let mode_of = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(name))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(mode_of("/bootstrap"), "-rwxr-xr-x", "{listing}");
    assert_eq!(mode_of("/lib/data.txt"), "-rw-r--r--", "{listing}");
    for (i, evil) in ["../escape", "/etc/evil", "a/../../escape"]
        .iter()
        .enumerate()
    {
        let zip = dir.join(format!("evil{i}.zip"));
        write_zip(&zip, &[("bootstrap", 0o100755, "x"), (evil, 0o100644, "x")]);
        assert!(
            !code_image(&zip, &dir.join(format!("evil{i}.squashfs"))),
            "{evil} must be refused"
        );
    }
    let link = dir.join("link.zip");
    write_zip(&link, &[("bootstrap", 0o120777, "x")]);
    assert!(
        !code_image(&link, &dir.join("link.squashfs")),
        "symlink entries must be refused"
    );
    let _ = fs::remove_dir_all(&dir);
}
