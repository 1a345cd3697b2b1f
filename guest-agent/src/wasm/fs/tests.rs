//! The wasm file system without an engine: archives mounted and merged,
//! every escape refused, `/tmp` writes within its cap, hostile archives.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::tree::MountError;
use super::zip::ZipError;
use super::*;

/// One archive member for [`zip`]: name, bytes, deflated?, symlink?
pub(crate) struct Member<'a>(pub &'a str, pub &'a [u8], pub bool, pub bool);

/// A ZIP archive (what `zip -r` writes: local headers, central directory,
/// end record), members stored or deflated.
pub(crate) fn zip(members: &[Member<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for Member(name, data, deflate, link) in members {
        let body = if *deflate {
            miniz_oxide::deflate::compress_to_vec(data, 6)
        } else {
            data.to_vec()
        };
        let method: u16 = if *deflate { 8 } else { 0 };
        let offset = out.len() as u32;
        let mut fixed = Vec::new();
        fixed.extend_from_slice(&20u16.to_le_bytes()); // version needed
        fixed.extend_from_slice(&0u16.to_le_bytes()); // flags
        fixed.extend_from_slice(&method.to_le_bytes());
        fixed.extend_from_slice(&[0; 4]); // time, date
        fixed.extend_from_slice(&0u32.to_le_bytes()); // crc (not checked)
        fixed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
        fixed.extend_from_slice(&0u16.to_le_bytes()); // extra
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&fixed);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&body);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&(0x0300u16 | 20).to_le_bytes()); // made by Unix
        central.extend_from_slice(&fixed);
        central.extend_from_slice(&[0; 6]); // comment len, disk, internal attrs
        let mode: u32 = if *link { 0o120777 } else { 0o100644 };
        central.extend_from_slice(&(mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(members.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

const READ: OpenFlags = OpenFlags {
    create: false,
    directory: false,
    exclusive: false,
    truncate: false,
    read: true,
    write: false,
    append: false,
};
const WRITE_NEW: OpenFlags = OpenFlags {
    create: true,
    directory: false,
    exclusive: false,
    truncate: true,
    read: true,
    write: true,
    append: false,
};

fn read_all(fs: &mut Files, fd: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = fs.read(fd, &mut buf, None).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn cat(fs: &mut Files, dirfd: u32, path: &str) -> Result<Vec<u8>, FsError> {
    let fd = fs.open(dirfd, path, READ)?;
    let data = read_all(fs, fd);
    fs.close(fd)?;
    Ok(data)
}

/// /var/task (fd 3), /opt from two layers (fd 4), /tmp of 1 KiB (fd 5).
fn sample() -> Files {
    let task = zip(&[
        Member(
            "lambda_function.py",
            b"def handler(e, c): return e\n",
            true,
            false,
        ),
        Member("pkg/", b"", false, false),
        Member("pkg/__init__.py", b"", false, false),
        Member("pkg/data.txt", b"stored bytes", false, false),
        Member("escape", b"/etc", false, true),
    ]);
    let layer1 = zip(&[
        Member("python/lib1.py", b"ONE = 1\n", true, false),
        Member("python/shared.py", b"FROM = 'layer1'\n", false, false),
    ]);
    let layer2 = zip(&[Member(
        "python/shared.py",
        b"FROM = 'layer2'\n",
        true,
        false,
    )]);
    Files::new(
        vec![
            ("/var/task".into(), task),
            ("/opt".into(), layer1),
            ("/opt/".into(), layer2),
        ],
        1024,
    )
    .unwrap()
}

#[test]
fn preopens_are_numbered_in_mount_order() {
    let fs = sample();
    assert_eq!(fs.preopen(3), Some("/var/task"));
    assert_eq!(fs.preopen(4), Some("/opt"));
    assert_eq!(fs.preopen(5), Some("/tmp"));
    assert_eq!(fs.preopen(6), None);
    assert_eq!(fs.preopen(2), None);
    assert_eq!(fs.fdstat(3), Ok((filetype::DIRECTORY, false)));
}

#[test]
fn stored_and_deflated_members_read_back() {
    let mut fs = sample();
    assert_eq!(
        cat(&mut fs, 3, "lambda_function.py").unwrap(),
        b"def handler(e, c): return e\n"
    );
    assert_eq!(cat(&mut fs, 3, "pkg/data.txt").unwrap(), b"stored bytes");
    assert_eq!(
        cat(&mut fs, 3, "./pkg/../pkg/data.txt").unwrap(),
        b"stored bytes"
    );
    let st = fs.path_stat(3, "pkg/data.txt").unwrap();
    assert_eq!((st.filetype, st.size), (filetype::REGULAR, 12));
    // pread and seek
    let fd = fs.open(3, "pkg/data.txt", READ).unwrap();
    let mut b = [0u8; 5];
    assert_eq!(fs.read(fd, &mut b, Some(7)).unwrap(), 5);
    assert_eq!(&b, b"bytes");
    assert_eq!(fs.seek(fd, -5, 2), Ok(7));
    assert_eq!(read_all(&mut fs, fd), b"bytes");
    assert_eq!(fs.seek(fd, -100, 1), Err(FsError::Inval));
}

#[test]
fn layers_merge_in_order() {
    let mut fs = sample();
    assert_eq!(cat(&mut fs, 4, "python/lib1.py").unwrap(), b"ONE = 1\n");
    assert_eq!(
        cat(&mut fs, 4, "python/shared.py").unwrap(),
        b"FROM = 'layer2'\n"
    );
    let dir = fs
        .open(
            4,
            "python",
            OpenFlags {
                directory: true,
                ..READ
            },
        )
        .unwrap();
    let names: Vec<String> = fs
        .readdir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, [".", "..", "lib1.py", "shared.py"]);
    // A directory fd resolves relative paths, and `..` climbs to the mount root.
    assert_eq!(
        cat(&mut fs, dir, "../python/lib1.py").unwrap(),
        b"ONE = 1\n"
    );
    assert_eq!(
        cat(&mut fs, dir, "../../etc/passwd"),
        Err(FsError::NotCapable)
    );
}

#[test]
fn escapes_are_refused() {
    let mut fs = sample();
    for (path, want) in [
        ("../etc/passwd", FsError::NotCapable),
        ("pkg/../../etc/passwd", FsError::NotCapable),
        ("/etc/passwd", FsError::NotCapable),
        ("..", FsError::NotCapable),
        ("escape", FsError::Loop),
        ("escape/passwd", FsError::Loop),
        ("missing", FsError::NoEnt),
        ("pkg/data.txt/x", FsError::NotDir),
        ("", FsError::NoEnt),
    ] {
        assert_eq!(fs.open(3, path, READ), Err(want), "{path}");
    }
    // A link is reported as a link, never followed.
    assert_eq!(
        fs.path_stat(3, "escape").unwrap().filetype,
        filetype::SYMLINK
    );
    assert_eq!(fs.readlink(3, "escape").unwrap(), "/etc");
    // Read-only trees refuse every write.
    assert_eq!(fs.open(3, "new.py", WRITE_NEW), Err(FsError::ReadOnly));
    assert_eq!(fs.mkdir(4, "d"), Err(FsError::ReadOnly));
    assert_eq!(fs.remove(3, "pkg/data.txt", false), Err(FsError::ReadOnly));
    assert_eq!(fs.rename(5, "a", 3, "b"), Err(FsError::ReadOnly));
    // Long names, bad fds, closing a preopen.
    let long = "a/".repeat(3000);
    assert_eq!(fs.open(3, &long, READ), Err(FsError::NameTooLong));
    assert_eq!(fs.open(99, "x", READ), Err(FsError::BadF));
    assert_eq!(fs.open(2, "x", READ), Err(FsError::BadF));
    assert_eq!(fs.close(3), Err(FsError::Perm));
    let fd = fs.open(3, "pkg/data.txt", READ).unwrap();
    assert_eq!(fs.open(fd, "x", READ), Err(FsError::NotDir));
    assert_eq!(fs.write(fd, b"x", None), Err(FsError::BadF));
}

#[test]
fn tmp_is_writable_within_its_cap() {
    let mut fs = sample();
    let fd = fs.open(5, "out.txt", WRITE_NEW).unwrap();
    assert_eq!(fs.write(fd, b"hello ", None), Ok(6));
    assert_eq!(fs.write(fd, b"world", None), Ok(5));
    fs.close(fd).unwrap();
    assert_eq!(cat(&mut fs, 5, "out.txt").unwrap(), b"hello world");
    assert_eq!(fs.tmp_used(), 11);
    fs.mkdir(5, "d").unwrap();
    assert_eq!(fs.mkdir(5, "d"), Err(FsError::Exist));
    fs.rename(5, "out.txt", 5, "d/moved.txt").unwrap();
    assert_eq!(cat(&mut fs, 5, "out.txt"), Err(FsError::NoEnt));
    assert_eq!(cat(&mut fs, 5, "d/moved.txt").unwrap(), b"hello world");
    assert_eq!(fs.remove(5, "d", true), Err(FsError::NotEmpty));
    assert_eq!(fs.rename(5, "d", 5, "d/inside"), Err(FsError::Inval));
    // Over the cap: ENOSPC, nothing half-written.
    let big = fs.open(5, "big", WRITE_NEW).unwrap();
    assert_eq!(fs.write(big, &[7u8; 2000], None), Err(FsError::NoSpace));
    assert_eq!(fs.write(big, &[7u8; 1000], None), Ok(1000));
    assert_eq!(fs.write(big, &[7u8; 100], None), Err(FsError::NoSpace));
    assert_eq!(fs.set_size(big, 4096), Err(FsError::NoSpace));
    fs.set_size(big, 10).unwrap();
    assert_eq!(fs.tmp_used(), 21);
    fs.remove(5, "d/moved.txt", false).unwrap();
    fs.remove(5, "d", true).unwrap();
    fs.remove(5, "big", false).unwrap();
    assert_eq!(fs.tmp_used(), 0);
    // Escapes from /tmp too.
    assert_eq!(
        fs.open(5, "../var/task/x", WRITE_NEW),
        Err(FsError::NotCapable)
    );
    assert_eq!(fs.mkdir(5, "/abs"), Err(FsError::NotCapable));
    assert_eq!(fs.rename(5, "x", 3, "y"), Err(FsError::ReadOnly));
    // Append mode writes at the end.
    let a = OpenFlags {
        append: true,
        ..WRITE_NEW
    };
    let fd = fs.open(5, "log", a).unwrap();
    fs.write(fd, b"1", None).unwrap();
    fs.seek(fd, 0, 0).unwrap();
    fs.write(fd, b"2", None).unwrap();
    assert_eq!(cat(&mut fs, 5, "log").unwrap(), b"12");
}

#[test]
fn close_all_keeps_tmp_contents() {
    let mut fs = sample();
    let fd = fs.open(5, "keep", WRITE_NEW).unwrap();
    fs.write(fd, b"state", None).unwrap();
    fs.close_all();
    assert_eq!(fs.read(fd, &mut [0; 4], None), Err(FsError::BadF));
    assert_eq!(cat(&mut fs, 5, "keep").unwrap(), b"state");
}

#[test]
fn too_many_open_files() {
    let mut fs = sample();
    for _ in 0..MAX_OPEN {
        fs.open(3, "pkg/data.txt", READ).unwrap();
    }
    assert_eq!(fs.open(3, "pkg/data.txt", READ), Err(FsError::MFile));
}

#[test]
fn hostile_archives_are_refused_at_mount() {
    let slip = zip(&[Member("../evil.py", b"x", false, false)]);
    assert!(matches!(
        Files::new(vec![("/var/task".into(), slip)], 0),
        Err(MountError::Escapes(_))
    ));
    let abs = zip(&[Member("/etc/cron.d/x", b"x", false, false)]);
    assert!(matches!(
        Files::new(vec![("/var/task".into(), abs)], 0),
        Err(MountError::Escapes(_))
    ));
    let good = zip(&[Member("a.py", b"print(1)", true, false)]);
    assert!(matches!(
        Files::new(vec![("var/task".into(), good.clone())], 0),
        Err(MountError::Escapes(_))
    ));
    assert!(matches!(
        Files::new(vec![("/var/../etc".into(), good.clone())], 0),
        Err(MountError::Escapes(_))
    ));
    assert_eq!(
        Files::new(vec![("/t".into(), b"not a zip".to_vec())], 0).err(),
        Some(MountError::Zip(ZipError::NotZip))
    );
    // Every truncation and every single-byte corruption of a good archive
    // is an error or a readable tree, never a panic.
    for cut in 0..good.len() {
        let _ = Files::new(vec![("/t".into(), good[..cut].to_vec())], 0);
    }
    for i in 0..good.len() {
        for v in [0u8, 0xff, 0x7f] {
            let mut bad = good.clone();
            bad[i] = v;
            if let Ok(mut fs) = Files::new(vec![("/t".into(), bad)], 0) {
                let _ = cat(&mut fs, 3, "a.py");
            }
        }
    }
}

#[test]
fn errnos_are_wasi_values() {
    assert_eq!(FsError::NoEnt.errno(), 44);
    assert_eq!(FsError::NotCapable.errno(), 76);
    assert_eq!(FsError::ReadOnly.errno(), 69);
    assert_eq!(FsError::NoSpace.errno(), 51);
    assert_eq!(FsError::Loop.to_string(), "symbolic links are not followed");
}
