//! virtio-block on real microVMs: the kernel-less `blk_test` guest writes
//! fresh random data and reports its SHA-256, which must match the host file;
//! a read-only drive refuses writes; data flushed before a SIGKILL of
//! `ember-vmm` is on disk. Drives come from `--drive` and from a Firecracker
//! JSON config.

use std::time::Duration;

use ember_tests::blknet::{field, guest, sha256_hex, TempFile, Vm};
use ember_tests::probes::ember_vmm;

const MIB: usize = 1 << 20;

fn vmm_args(guest_name: &str, cmdline: &str, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--kernel",
        &guest(guest_name).display().to_string(),
        "--cmdline",
        cmdline,
        "--mem-mib",
        "128",
        "--console",
        "stdout",
        "--timeout-ms",
        "120000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend_from_slice(extra);
    a
}

#[test]
fn guest_writes_random_data_host_file_has_the_same_sha256() {
    let disk = TempFile::new("blk-rw", &vec![0u8; 8 * MIB]);
    let bytes = 5 * MIB + 512 * 3;
    let mut vm = Vm::spawn(
        &ember_vmm().display().to_string(),
        &vmm_args(
            "blk_test",
            &format!("rw {bytes}"),
            &["--drive".into(), disk.path()],
        ),
    );
    let line = vm.wait_line("blk: rw ", Duration::from_secs(120));
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no result line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(code, Some(0), "{line}\n{stderr}");
    assert_eq!(field(&line, "readback"), Some("ok"), "{line}");
    let file = std::fs::read(&disk.0).unwrap();
    assert_eq!(
        field(&line, "sha256"),
        Some(sha256_hex(&file[..bytes]).as_str()),
        "{line}"
    );
    assert!(
        file[bytes..].iter().all(|&b| b == 0),
        "bytes past the write changed"
    );
    // The id line: drive id from the flag, capacity in sectors, not read-only.
    let id = seen
        .iter()
        .find(|l| l.starts_with("blk: id="))
        .expect("id line");
    assert_eq!(
        field(id, "sectors"),
        Some((8 * MIB / 512).to_string().as_str()),
        "{id}"
    );
    assert_eq!(field(id, "ro"), Some("false"), "{id}");
}

#[test]
fn read_only_drive_refuses_writes_and_stays_unchanged() {
    let contents: Vec<u8> = (0..2 * MIB).map(|i| (i * 131 % 251) as u8).collect();
    let disk = TempFile::new("blk-ro", &contents);
    let mut vm = Vm::spawn(
        &ember_vmm().display().to_string(),
        &vmm_args(
            "blk_test",
            "ro",
            &["--drive".into(), format!("{},ro", disk.path())],
        ),
    );
    let line = vm.wait_line("blk: ro ", Duration::from_secs(120));
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no result line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(code, Some(0), "{line}\n{stderr}");
    assert!(line.contains("write=Err(IoErr)"), "{line}");
    assert!(line.contains("unsupported=Err(Unsupported)"), "{line}");
    assert!(line.contains("past_end=Err(IoErr)"), "{line}");
    assert_eq!(
        field(&line, "head_sha256"),
        Some(sha256_hex(&contents[..4096]).as_str())
    );
    assert_eq!(
        std::fs::read(&disk.0).unwrap(),
        contents,
        "a read-only drive changed"
    );
}

#[test]
fn data_flushed_before_sigkill_is_on_disk() {
    let disk = TempFile::new("blk-flush", &vec![0u8; 4 * MIB]);
    let bytes = 3 * MIB;
    let config = serde_json::json!({
        "boot-source": { "kernel_image_path": guest("blk_test"), "boot_args": format!("flush {bytes}") },
        "machine-config": { "vcpu_count": 1, "mem_size_mib": 128 },
        "drives": [{
            "drive_id": "scratch", "path_on_host": disk.path(), "is_root_device": false,
            "is_read_only": false, "cache_type": "Writeback"
        }]
    });
    let (mut vm, _cfg) = Vm::with_config(&config);
    let line = vm.wait_line("blk: flushed ", Duration::from_secs(120));
    let pid = vm.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no flush line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(code, None, "ember-vmm must have died from SIGKILL");
    let id = seen
        .iter()
        .find(|l| l.starts_with("blk: id="))
        .expect("id line");
    assert!(
        id.starts_with("blk: id=scratch "),
        "GET_ID returns the drive_id: {id}"
    );
    assert_eq!(
        field(id, "flush"),
        Some("true"),
        "Writeback offers FLUSH: {id}"
    );
    let file = std::fs::read(&disk.0).unwrap();
    assert_eq!(
        field(&line, "sha256"),
        Some(sha256_hex(&file[..bytes]).as_str()),
        "{line}"
    );
}

#[test]
fn hostile_chains_are_refused_and_the_drive_keeps_working() {
    let disk = TempFile::new("blk-hostile", &vec![0u8; 4 * MIB]);
    let mut vm = Vm::spawn(
        &ember_vmm().display().to_string(),
        &vmm_args("blk_test", "hostile", &["--drive".into(), disk.path()]),
    );
    let line = vm.wait_line("blk: hostile ", Duration::from_secs(120));
    let (code, stderr, seen) = vm.finish(Duration::from_secs(30));
    let line =
        line.unwrap_or_else(|| panic!("no result line; console: {seen:#?}\nstderr: {stderr}"));
    assert_eq!(line, "blk: hostile ok", "console: {seen:#?}");
    assert_eq!(code, Some(0), "{stderr}");
    // Complaints are logged, but rate-limited: far fewer lines than requests.
    let complaints = stderr
        .lines()
        .filter(|l| l.contains("request refused"))
        .count();
    assert!((1..=6).contains(&complaints), "{stderr}");
    // The closing 1 MiB write reached the file.
    let rw = seen
        .iter()
        .find(|l| l.starts_with("blk: rw "))
        .expect("rw line");
    let file = std::fs::read(&disk.0).unwrap();
    assert_eq!(
        field(rw, "sha256"),
        Some(sha256_hex(&file[..MIB]).as_str()),
        "{rw}"
    );
}
