//! Linux runtime support without booting Linux: the host-kind rule, what is
//! offered and the refusal messages, the exact `ember-vmm`/`ember-jailer`
//! command line of a Linux environment, and real code/layer images built by
//! `images/code-image.sh` (inspected with `unsquashfs`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::caps::{detect, find_files, kvm_refusal, Found, LinuxArgs, LinuxMode};
use super::images::{code_image_name, ImageCache};
use super::Drives;
use crate::env::linux::{init_spec, kernel_cmdline, launch_config, vcpus_for};
use crate::env::EnvSpec;
use crate::env::{Code, Guest, JailConfig, LaunchConfig};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ember-linux-{tag}-{}-{}",
        std::process::id(),
        crate::util::uuid4()
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

fn touch(p: &Path) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, b"x").unwrap();
}

#[test]
fn host_kind_rule() {
    let root = tmp("kvm");
    assert_eq!(kvm_refusal(&root).as_deref(), Some("no /dev/kvm"));
    touch(&root.join("dev/kvm"));
    assert!(kvm_refusal(&root).unwrap().contains("neither kvm_intel"));
    fs::create_dir_all(root.join("sys/module/kvm_intel")).unwrap();
    assert_eq!(kvm_refusal(&root), None);
    fs::create_dir_all(root.join("sys/module/kvm_pvm")).unwrap();
    assert!(kvm_refusal(&root).unwrap().contains("PVM"));
    let _ = fs::remove_dir_all(root);
}

fn args(mode: LinuxMode, kernel: &Path, images: &Path) -> LinuxArgs {
    LinuxArgs {
        linux_guests: mode,
        linux_kernel: Some(kernel.to_path_buf()),
        linux_images: Some(images.to_path_buf()),
        code_image_tool: Some(repo_tool()),
        linux_boot_timeout: 20,
        linux_init_timeout: 10,
    }
}

fn repo_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/code-image.sh")
}

#[test]
fn offer_follows_host_and_images() {
    let d = tmp("offer");
    let (kernel, images) = (d.join("vmlinux"), d.join("images"));
    touch(&kernel);
    touch(&images.join("initramfs.cpio"));
    touch(&images.join("provided.squashfs"));
    let pvm = d.join("pvm-root");
    touch(&pvm.join("dev/kvm"));
    fs::create_dir_all(pvm.join("sys/module/kvm_pvm")).unwrap();

    // PVM: nothing offered, and the create-time message says why.
    let (offer, found) = detect(&args(LinuxMode::Auto, &kernel, &images), &pvm);
    assert!(found.is_none() && offer.offered().is_empty());
    let msg = offer.check("python3.11").unwrap_err();
    assert!(
        msg.contains("needs a Linux guest") && msg.contains("PVM"),
        "{msg}"
    );

    // Forced (or hardware): the runtimes whose image exists.
    let (offer, found) = detect(&args(LinuxMode::Force, &kernel, &images), &pvm);
    assert!(found.is_some());
    assert_eq!(
        offer.offered(),
        ["provided", "provided.al2", "provided.al2023"]
    );
    assert!(offer.check("provided.al2023").is_ok());
    let msg = offer.check("python3.11").unwrap_err();
    assert!(msg.contains("no python3.11.squashfs"), "{msg}");
    touch(&images.join("python3.11.squashfs"));
    let (offer, _) = detect(&args(LinuxMode::Force, &kernel, &images), &pvm);
    assert!(offer.check("python3.11").is_ok());
    assert!(offer.check("python3.12").is_err());

    // Off, or a missing kernel: refused with the reason.
    let (offer, _) = detect(&args(LinuxMode::Off, &kernel, &images), &pvm);
    assert!(offer
        .check("provided")
        .unwrap_err()
        .contains("--linux-guests off"));
    let (offer, _) = detect(&args(LinuxMode::Force, &d.join("nope"), &images), &pvm);
    assert!(offer
        .check("provided")
        .unwrap_err()
        .contains("no guest kernel"));
    let _ = fs::remove_dir_all(d);
}

fn spec(dir: &Path, layers: usize) -> EnvSpec {
    EnvSpec {
        env_id: 7,
        function_name: "lf".into(),
        function_version: "$LATEST".into(),
        handler: "app.handler".into(),
        runtime: "python3.11".into(),
        code: Arc::new(Vec::new()),
        code_blob: "ab".repeat(32),
        layers: (0..layers)
            .map(|i| format!("arn:aws:lambda:us-east-1:000000000000:layer:l{i}:1"))
            .collect(),
        ephemeral_mib: 1024,
        env_vars: [("K".to_string(), "V".to_string())].into(),
        memory_mib: 2048,
        timeout_ms: 5000,
        work_dir: dir.to_path_buf(),
        snapshot: None,
    }
}

/// The value following `flag` each time it occurs.
fn values(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].clone())
        .collect()
}

#[test]
fn linux_environment_command_line_and_drives() {
    let d = tmp("cmd");
    let found = Found {
        kernel: d.join("k/vmlinux"),
        initramfs: d.join("i/initramfs.cpio"),
        images_dir: d.join("i"),
        tool: repo_tool(),
        boot_timeout: Duration::from_secs(20),
        init_timeout: Duration::from_secs(10),
    };
    let drives = Drives {
        runtime: d.join("i/python3.11.squashfs"),
        code: d.join("c/code.squashfs"),
        layers: Some(d.join("c/layers.squashfs")),
    };
    let mut base = LaunchConfig::kernelless("/opt/ember/ember-vmm", "/opt/ember/agent");
    let sp = spec(&d, 2);
    let cfg = launch_config(&base, &found, &sp, &drives);
    assert_eq!(cfg.mem_mib, 2048);
    // Regression: a timed-out function's answer waits for its re-init, so
    // the host's backstop must allow the init phase on top of the deadline
    // (it allowed 1 s: a slow-to-import runtime lost its environment and
    // its logs on every timeout).
    assert_eq!(
        cfg.deadline_grace,
        base.deadline_grace + Duration::from_secs(10)
    );
    assert_eq!(cfg.vcpus, 2);
    assert!(matches!(&cfg.guest, Guest::Linux { initrd: Some(i), .. } if *i == found.initramfs));

    // Unjailed: the host paths, in guest order vda, vdb, vdc.
    let (prog, a) = crate::env::command(&cfg, &d.join("env"), "id1").unwrap();
    assert_eq!(prog, PathBuf::from("/opt/ember/ember-vmm"));
    assert_eq!(values(&a, "--kernel"), [found.kernel.display().to_string()]);
    assert_eq!(
        values(&a, "--initrd"),
        [found.initramfs.display().to_string()]
    );
    let cmdline = kernel_cmdline(1024, found.init_timeout);
    assert_eq!(values(&a, "--cmdline"), [cmdline.clone()]);
    assert!(cmdline.contains("ember_tmp_size=1024m"));
    // Lambda's 10 s init phase, told to the agent (--linux-init-timeout).
    assert!(
        cmdline.contains(" ember_init_timeout_ms=10000"),
        "{cmdline}"
    );
    assert_eq!(values(&a, "--mem-mib"), ["2048"]);
    assert_eq!(values(&a, "--vcpus"), ["2"]);
    let want: Vec<String> = drives
        .in_order()
        .iter()
        .map(|p| format!("{},ro", p.display()))
        .collect();
    assert_eq!(values(&a, "--drive"), want);
    assert!(!a.iter().any(|x| x == "--kernelless"));
    assert_eq!(
        values(&a, "--vsock")[0],
        format!("3:{}", d.join("env/v.sock").display())
    );

    // Jailed: every image bind-mounted read-only, in-jail paths for the VMM.
    base.jail = Some(JailConfig::new("/opt/ember/ember-jailer"));
    let cfg = launch_config(&base, &found, &sp, &drives);
    let (prog, a) = crate::env::command(&cfg, &d.join("env"), "id1").unwrap();
    assert_eq!(prog, PathBuf::from("/opt/ember/ember-jailer"));
    let split = a.iter().position(|x| x == "--").unwrap();
    let (jailer, vmm) = (&a[..split], &a[split + 1..]);
    let files = values(jailer, "--file");
    for (i, p) in drives.in_order().iter().enumerate() {
        assert!(
            files.contains(&format!("{}:/drive{i}", p.display())),
            "{files:?}"
        );
    }
    assert!(files.contains(&format!("{}:/kernel", found.kernel.display())));
    assert!(files.contains(&format!("{}:/initrd", found.initramfs.display())));
    assert_eq!(values(jailer, "--mem-limit-mib"), ["2112"]);
    assert_eq!(
        values(vmm, "--drive"),
        ["/drive0,ro", "/drive1,ro", "/drive2,ro"]
    );
    assert_eq!(values(vmm, "--kernel"), ["/kernel"]);
    assert_eq!(values(vmm, "--vsock"), ["3:/run/v.sock"]);

    // Init points the agent at the mounted code.
    let init = init_spec(&sp);
    assert!(matches!(init.code, Code::Path(ref p) if p == "/var/task"));
    assert_eq!(init.env, [("K".to_string(), "V".to_string())]);
    assert_eq!(
        (
            vcpus_for(128),
            vcpus_for(1769),
            vcpus_for(1770),
            vcpus_for(10240)
        ),
        (1, 1, 2, 6)
    );
    let _ = fs::remove_dir_all(d);
}

fn zip(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        w.start_file(*name, o).unwrap();
        w.write_all(data.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn cat(image: &Path, file: &str) -> String {
    let out = Command::new("unsquashfs")
        .args(["-cat"])
        .arg(image)
        .arg(file)
        .output()
        .expect("unsquashfs (squashfs-tools)");
    assert!(out.status.success(), "unsquashfs -cat {file}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn code_and_layer_images_are_built_once_and_merged_in_order() {
    let d = tmp("img");
    let cache = ImageCache::open(&d.join("cache"), &repo_tool()).unwrap();
    let code = zip(&[
        ("bootstrap", "#!/bin/sh\necho hi\n"),
        ("lib/app.py", "x = 1\n"),
    ]);
    let img = cache.code_image("c0ffee", || Ok(code.clone())).unwrap();
    assert_eq!(img, d.join("cache").join(code_image_name("c0ffee")));
    assert_eq!(cat(&img, "lib/app.py"), "x = 1\n");
    let listing = Command::new("unsquashfs")
        .args(["-ll"])
        .arg(&img)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("/bootstrap")),
        "{listing}"
    );
    // Cached: the ZIP is not even loaded again.
    let again = cache.code_image("c0ffee", || panic!("rebuilt")).unwrap();
    assert_eq!(again, img);

    let layers = [
        zip(&[
            ("python/shared.py", "v = 'first'\n"),
            ("python/only1.py", "a\n"),
        ]),
        zip(&[("python/shared.py", "v = 'second'\n"), ("bin/tool", "t\n")]),
    ];
    let names = ["l-one".to_string(), "l-two".to_string()];
    let loads = AtomicUsize::new(0);
    let load = |b: &str| {
        loads.fetch_add(1, Ordering::Relaxed);
        Ok(layers[names.iter().position(|n| n == b).unwrap()].clone())
    };
    let merged = cache.layers_image(&names, load).unwrap();
    assert_eq!(cat(&merged, "python/shared.py"), "v = 'second'\n");
    assert_eq!(cat(&merged, "python/only1.py"), "a\n");
    assert_eq!(cat(&merged, "bin/tool"), "t\n");
    // The other order is another image, with the other winner.
    let reversed = [names[1].clone(), names[0].clone()];
    let merged2 = cache.layers_image(&reversed, load).unwrap();
    assert_ne!(merged, merged2);
    assert_eq!(cat(&merged2, "python/shared.py"), "v = 'first'\n");
    assert_eq!(loads.load(Ordering::Relaxed), 4);
    cache.layers_image(&names, load).unwrap();
    assert_eq!(
        loads.load(Ordering::Relaxed),
        4,
        "a cached image is not rebuilt"
    );

    // A layer the tool refuses: a clean error, nothing cached.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_symlink(
        "python/evil",
        "/etc",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    let evil = w.finish().unwrap().into_inner();
    let err = cache.code_image("bad", || Ok(evil.clone())).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!d.join("cache").join(code_image_name("bad")).exists());

    // Opening the cache again (emberd restarted) removes the plaintext images.
    drop(cache);
    let _cache = ImageCache::open(&d.join("cache"), &repo_tool()).unwrap();
    assert!(!img.exists() && !merged.exists());
    let _ = fs::remove_dir_all(d);
}

#[test]
fn found_files_are_real_paths_not_links() {
    // The image cache's set-* directories link to the built artefacts; the
    // jailer refuses links, so emberd must hand it the files they name.
    let d = tmp("links");
    let built = d.join("built");
    touch(&built.join("vmlinux"));
    touch(&built.join("initramfs.cpio"));
    let images = d.join("set-x");
    fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink(built.join("initramfs.cpio"), images.join("initramfs.cpio"))
        .unwrap();
    let kernel = d.join("vmlinux-link");
    std::os::unix::fs::symlink(built.join("vmlinux"), &kernel).unwrap();

    let found = find_files(&args(LinuxMode::Auto, &kernel, &images)).unwrap();
    let real = fs::canonicalize(&built).unwrap();
    assert_eq!(found.kernel, real.join("vmlinux"));
    assert_eq!(found.initramfs, real.join("initramfs.cpio"));
}
