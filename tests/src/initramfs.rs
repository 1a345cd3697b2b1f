//! Busybox initramfs images for the Linux guest tests: newc cpio records
//! (the kernel's initramfs format, Documentation/driver-api/early-userspace)
//! holding /bin/busybox (the host's busybox-static), /init and extra files.

use std::path::Path;

/// One newc cpio record.
pub fn cpio_entry(
    out: &mut Vec<u8>,
    ino: u32,
    name: &str,
    mode: u32,
    rdev: (u32, u32),
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Writes to `path` an initramfs with /dev/console, /proc, /bin/busybox,
/// `/init` = `init` (a script for `/bin/busybox sh`) and `files`
/// (`(name, mode, contents)`, regular files in the root).
pub fn busybox_initramfs(path: &Path, init: &str, files: &[(&str, u32, &[u8])]) {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    let mut cpio = Vec::new();
    cpio_entry(&mut cpio, 1, "dev", 0o040755, (0, 0), b"");
    cpio_entry(&mut cpio, 2, "dev/console", 0o020600, (5, 1), b"");
    cpio_entry(&mut cpio, 3, "bin", 0o040755, (0, 0), b"");
    cpio_entry(&mut cpio, 4, "bin/busybox", 0o100755, (0, 0), &busybox);
    cpio_entry(&mut cpio, 5, "init", 0o100755, (0, 0), init.as_bytes());
    cpio_entry(&mut cpio, 6, "proc", 0o040755, (0, 0), b"");
    for (n, (name, mode, data)) in files.iter().enumerate() {
        cpio_entry(&mut cpio, 7 + n as u32, name, 0o100000 | mode, (0, 0), data);
    }
    cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, (0, 0), b"");
    std::fs::write(path, cpio).expect("write initramfs");
}

#[cfg(test)]
mod tests {
    use super::cpio_entry;

    #[test]
    fn cpio_records_are_newc_aligned() {
        let mut c = Vec::new();
        cpio_entry(&mut c, 7, "init", 0o100755, (0, 0), b"abc");
        assert_eq!(&c[..6], b"070701");
        assert_eq!(&c[6..14], b"00000007");
        assert_eq!(c.len() % 4, 0);
        // header 110 + "init\0" = 115 -> pad to 116, then data 3 -> 120
        assert_eq!(c.len(), 120);
        assert_eq!(&c[116..119], b"abc");
    }
}
