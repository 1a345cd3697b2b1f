//! Bad input to `ember-vmm`: every case ends with one error line on stderr and
//! a non-zero exit, never a panic or a hang (the helpers fail the test on both).

use ember_tests::vmm::{code, guest, path_str, run_guest, scratch, vmm};

/// Asserts a one-line error with `needle` and exit code `want`.
fn refused(out: &ember_tests::probes::RunOutput, want: i32, needle: &str) {
    assert_eq!(code(out), Some(want), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {lines:?}");
    assert!(lines[0].starts_with("ember-vmm: error: "), "{}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    assert_eq!(out.stdout, "");
}

fn with_file(tag: &str, bytes: &[u8], f: impl FnOnce(&str)) {
    let p = scratch(tag);
    std::fs::write(&p, bytes).expect("write scratch file");
    f(path_str(&p));
    let _ = std::fs::remove_file(&p);
}

/// End of the file data of the ELF's PT_LOAD segments.
fn loaded_end(elf: &[u8]) -> usize {
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes"));
    let phoff = u64_at(32) as usize;
    let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
    (0..phnum)
        .map(|i| phoff + i * 56)
        .filter(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().expect("4 bytes")) == 1)
        .map(|ph| (u64_at(ph + 8) + u64_at(ph + 32)) as usize)
        .max()
        .expect("a PT_LOAD segment")
}

#[test]
fn missing_kernel() {
    refused(
        &vmm(&["--kernel", "/nonexistent/vmlinux"]),
        1,
        "cannot open",
    );
    refused(&vmm(&["--vcpus", "1"]), 1, "no kernel");
}

#[test]
fn corrupt_and_truncated_elves() {
    let hello = std::fs::read(guest("hello")).expect("read hello");
    // Cut one byte before the end of the last PT_LOAD's file data.
    let cut = loaded_end(&hello) - 1;
    with_file("trunc", &hello[..cut], |p| {
        refused(&vmm(&["--kernel", p, "--kernelless"]), 1, "truncated ELF");
    });
    with_file("hdr", &hello[..40], |p| {
        refused(&vmm(&["--kernel", p, "--kernelless"]), 1, "truncated ELF")
    });
    let mut bad = hello.clone();
    bad[56] = 0xff; // program header count
    bad[57] = 0xff;
    with_file("phnum", &bad, |p| {
        refused(&vmm(&["--kernel", p]), 1, "corrupt ELF")
    });
    with_file(
        "junk",
        b"\x7fELF this is not an executable at all, just junk bytes.............",
        |p| refused(&vmm(&["--kernel", p, "--kernelless"]), 1, "ELF"),
    );
    with_file("notelf", b"plain text", |p| {
        refused(&vmm(&["--kernel", p, "--kernelless"]), 1, "not an ELF")
    });
}

#[test]
fn segments_outside_guest_memory() {
    // hello is linked at 2 MiB: with 2 MiB of memory it cannot fit.
    refused(
        &run_guest("hello", "", &["--mem-mib", "2"]),
        1,
        "outside guest memory",
    );
    // With 4 MiB the image fits but leaves no heap beside the stack.
    refused(
        &run_guest("hello", "", &["--mem-mib", "4"]),
        1,
        "memory too small",
    );
}

#[test]
fn memory_size_limits() {
    refused(
        &run_guest("hello", "", &["--mem-mib", "0"]),
        1,
        "mem_size_mib",
    );
    refused(
        &run_guest("hello", "", &["--mem-mib", "1"]),
        1,
        "mem_size_mib",
    );
    refused(
        &run_guest("hello", "", &["--mem-mib", "99999999"]),
        1,
        "mem_size_mib",
    );
    // Kernel-less guests live below the 3 GiB MMIO gap.
    refused(
        &run_guest("hello", "", &["--mem-mib", "4096"]),
        1,
        "at most 3072 MiB",
    );
}

#[test]
fn vcpu_count_limits() {
    refused(&run_guest("hello", "", &["--vcpus", "0"]), 1, "vcpu_count");
    refused(&run_guest("hello", "", &["--vcpus", "33"]), 1, "vcpu_count");
    refused(&run_guest("hello", "", &["--vcpus", "-1"]), 2, "--vcpus");
}

#[test]
fn command_line_too_long() {
    let long = "x".repeat(ember_abi::guest::MAX_ARGS + 1);
    refused(&run_guest("hello", &long, &[]), 1, "too long");
    let huge = "x".repeat(70_000);
    refused(&run_guest("hello", &huge, &[]), 1, "too long");
}

#[test]
fn initrd_is_refused_for_kernelless_guests() {
    with_file("initrd", &[0u8; 4096], |p| {
        refused(&run_guest("hello", "", &["--initrd", p]), 1, "initrd")
    });
}

#[test]
fn malformed_and_unknown_config() {
    with_file("json1", b"{ \"boot-source\": ", |p| {
        refused(
            &vmm(&["--no-api", "--config-file", p]),
            1,
            "bad config file",
        )
    });
    let unknown_top = format!(
        r#"{{"boot-source":{{"kernel_image_path":"{}"}},"frobs":1}}"#,
        path_str(&guest("hello"))
    );
    with_file("json2", unknown_top.as_bytes(), |p| {
        refused(
            &vmm(&["--no-api", "--config-file", p]),
            1,
            "unknown field `frobs`",
        )
    });
    let unknown_key = format!(
        r#"{{"boot-source":{{"kernel_image_path":"{}"}},"machine-config":{{"vcpu_count":1,"mem_size_mib":64,"turbo":true}}}}"#,
        path_str(&guest("hello"))
    );
    with_file("json3", unknown_key.as_bytes(), |p| {
        refused(
            &vmm(&["--no-api", "--config-file", p]),
            1,
            "unknown field `turbo`",
        )
    });
    let balloon = format!(
        r#"{{"boot-source":{{"kernel_image_path":"{}"}},"balloon":{{"amount_mib":8}}}}"#,
        path_str(&guest("hello"))
    );
    with_file("json4", balloon.as_bytes(), |p| {
        refused(
            &vmm(&["--no-api", "--config-file", p]),
            1,
            "`balloon` is not supported",
        )
    });
    refused(
        &vmm(&["--no-api", "--config-file", "/nonexistent/vm.json"]),
        1,
        "cannot read config file",
    );
}

#[test]
fn bad_flags() {
    refused(&vmm(&["--frobnicate"]), 2, "unknown flag");
    refused(&vmm(&["--kernel"]), 2, "needs a value");
    refused(
        &vmm(&["--api-sock", "/tmp/x.sock", "--no-api"]),
        2,
        "exclude each other",
    );
}
