//! Probe and null guests for the Linux boot paths: assembles
//! `tests/guests/probes/*.S` with GNU `as` + `ld` (cached by source hash, never
//! committed), runs `ember-vmm` with a deadline, and parses the probes'
//! `KEY hex` serial lines.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Why a probe could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("reading probe sources in {0}")]
    Source(PathBuf, #[source] std::io::Error),
    #[error("running {0}")]
    Spawn(&'static str, #[source] std::io::Error),
    #[error("{tool} failed on {name}: {stderr}")]
    Tool {
        tool: &'static str,
        name: String,
        stderr: String,
    },
}

/// Where the probe sources live.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/probes")
}

/// Assembles and links probe `name` (`probe64`, `probe_pvh`, `null_pvh`) and
/// returns the ELF's path. Rebuilt only when a source changes.
pub fn build(name: &str) -> Result<PathBuf, ProbeError> {
    cached(name, "probe.ld", "elf", |obj, out| {
        link(name, obj, "probe.ld", out)
    })
}

/// Builds probe `name` as a bzImage (boot protocol 2.15, 64-bit entry at
/// `code32_start + 0x200`): one setup sector after the boot sector, then the
/// protected-mode code linked by `probe_bz.ld`.
pub fn build_bzimage(name: &str) -> Result<PathBuf, ProbeError> {
    cached(name, "probe_bz.ld", "bzimage", |obj, out| {
        let elf = out.with_extension("elf");
        link(name, obj, "probe_bz.ld", &elf)?;
        let bin = out.with_extension("bin");
        let mut objcopy = Command::new("objcopy");
        objcopy.args(["-O", "binary"]).arg(&elf).arg(&bin);
        run_tool("objcopy", name, &mut objcopy)?;
        let code = std::fs::read(&bin).map_err(|e| ProbeError::Source(bin.clone(), e))?;
        let _ = std::fs::remove_file(&elf);
        let _ = std::fs::remove_file(&bin);
        std::fs::write(out, bzimage(&code)).map_err(|e| ProbeError::Source(out.to_path_buf(), e))
    })
}

/// Setup header values the bzImage probe carries (checked by the probe test).
pub const BZ_SETUP_SECTS: u8 = 1;
pub const BZ_VERSION: u16 = 0x020f;
pub const BZ_CMDLINE_SIZE: u32 = 1023;
pub const BZ_INITRD_ADDR_MAX: u32 = 0x00ff_ffff;

/// Wraps protected-mode `code` (starting at load address + 0x200) in a
/// bzImage: boot sector + setup sector holding the setup header (boot.rst).
pub fn bzimage(code: &[u8]) -> Vec<u8> {
    let setup_len = (1 + BZ_SETUP_SECTS as usize) * 512;
    let mut img = vec![0u8; setup_len + 0x200];
    let put = |img: &mut Vec<u8>, off: usize, bytes: &[u8]| {
        img[off..off + bytes.len()].copy_from_slice(bytes)
    };
    put(&mut img, 0x1f1, &[BZ_SETUP_SECTS]);
    put(&mut img, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut img, 0x202, b"HdrS");
    put(&mut img, 0x206, &BZ_VERSION.to_le_bytes());
    put(&mut img, 0x211, &[0x01]); // loadflags: LOADED_HIGH
    put(&mut img, 0x214, &0x0010_0000u32.to_le_bytes()); // code32_start
    put(&mut img, 0x22c, &BZ_INITRD_ADDR_MAX.to_le_bytes());
    put(&mut img, 0x230, &0x0020_0000u32.to_le_bytes()); // kernel_alignment
    put(&mut img, 0x236, &0x0001u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut img, 0x238, &BZ_CMDLINE_SIZE.to_le_bytes());
    // init_size: the code plus room for its .bss (the probes use < 8 KiB).
    let init_size = (0x200 + code.len() + 0x4000) as u32;
    put(&mut img, 0x260, &init_size.to_le_bytes());
    img.extend_from_slice(code);
    img
}

/// Hashes the sources of `name` + `script`, and runs `make(obj, out)` unless
/// `<kind>-<name>-<hash>` already exists; returns that path.
fn cached(
    name: &str,
    script: &str,
    kind: &str,
    make: impl FnOnce(&Path, &Path) -> Result<(), ProbeError>,
) -> Result<PathBuf, ProbeError> {
    let dir = source_dir();
    let mut hash = Sha256::new();
    for file in [format!("{name}.S"), "common.S".into(), script.into()] {
        let bytes =
            std::fs::read(dir.join(&file)).map_err(|e| ProbeError::Source(dir.clone(), e))?;
        hash.update(&bytes);
    }
    let digest: String = hash
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let out_dir = std::env::temp_dir().join("ember-probes");
    std::fs::create_dir_all(&out_dir).map_err(|e| ProbeError::Source(out_dir.clone(), e))?;
    let done = out_dir.join(format!("{name}-{kind}-{digest}"));
    if done.exists() {
        return Ok(done);
    }
    // Build under a unique name, then rename: parallel tests may race here.
    static UNIQUE: AtomicU32 = AtomicU32::new(0);
    let unique = format!(
        "{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = out_dir.join(format!("{name}-{kind}-{digest}-tmp-{unique}"));
    let obj = out_dir.join(format!("{name}-{kind}-{digest}-tmp-{unique}.o"));
    let mut as_cmd = Command::new("as");
    as_cmd
        .arg("--64")
        .arg("-I")
        .arg(&dir)
        .arg("-o")
        .arg(&obj)
        .arg(dir.join(format!("{name}.S")));
    run_tool("as", name, &mut as_cmd)?;
    make(&obj, &tmp)?;
    let _ = std::fs::remove_file(&obj);
    std::fs::rename(&tmp, &done).map_err(|e| ProbeError::Source(done.clone(), e))?;
    Ok(done)
}

fn link(name: &str, obj: &Path, script: &str, out: &Path) -> Result<(), ProbeError> {
    let mut ld_cmd = Command::new("ld");
    ld_cmd
        .args([
            "-m",
            "elf_x86_64",
            "-nostdlib",
            "-static",
            "--build-id=none",
            "-z",
            "noexecstack",
        ])
        .arg("--no-warn-rwx-segments")
        .arg("-T")
        .arg(source_dir().join(script))
        .arg("-o")
        .arg(out)
        .arg(obj);
    run_tool("ld", name, &mut ld_cmd)
}

fn run_tool(tool: &'static str, name: &str, cmd: &mut Command) -> Result<(), ProbeError> {
    let out = cmd.output().map_err(|e| ProbeError::Spawn(tool, e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProbeError::Tool {
            tool,
            name: name.into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        })
    }
}

/// The `ember-vmm` binary: `$EMBER_VMM`, else beside the running test's
/// target directory (`target/<profile>/deps/<test>` -> `target/<profile>/ember-vmm`).
pub fn ember_vmm() -> PathBuf {
    if let Some(p) = std::env::var_os("EMBER_VMM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("ember-vmm")
}

/// The `ember-snapshot` binary (the snapshot library's command-line
/// driver), beside [`ember_vmm`].
pub fn ember_snapshot() -> PathBuf {
    ember_vmm().with_file_name("ember-snapshot")
}

/// What a finished (or killed) child left.
#[derive(Debug)]
pub struct RunOutput {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Runs `program args` and kills it after `deadline`.
pub fn run_with_deadline(
    program: &Path,
    args: &[String],
    deadline: Duration,
) -> std::io::Result<RunOutput> {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || read_all(out.as_mut()));
    let err_t = std::thread::spawn(move || read_all(err.as_mut()));
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    Ok(RunOutput {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
        elapsed,
        timed_out,
    })
}

fn read_all<R: Read>(r: Option<&mut R>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The probe's report: `KEY hex` lines -> bytes. Lines that are not probe
/// output (VMM logs on the same stream) are skipped; a key seen twice keeps
/// the first value.
pub fn parse_report(serial: &str) -> HashMap<String, Vec<u8>> {
    let mut map = HashMap::new();
    for line in serial.lines() {
        let mut parts = line.trim_end().splitn(2, ' ');
        let (Some(key), hex) = (parts.next(), parts.next().unwrap_or("")) else {
            continue;
        };
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_hexdigit() || b"._x".contains(&b))
        {
            continue;
        }
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let bytes = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        map.entry(key.to_string()).or_insert(bytes);
    }
    map
}

/// Little-endian field readers for the reports.
pub fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub fn le64(b: &[u8], o: usize) -> u64 {
    u64::from(le32(b, o)) | (u64::from(le32(b, o + 4)) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parsing_skips_noise() {
        let r = parse_report(
            "ember-vmm: started\nREGS 0070\nEND \nCPUID.0x1.0x0 ff\nbad line here\nZP 0g\n",
        );
        assert_eq!(r["REGS"], vec![0x00, 0x70]);
        assert_eq!(r["END"], Vec::<u8>::new());
        assert_eq!(r["CPUID.0x1.0x0"], vec![0xff]);
        assert!(!r.contains_key("ZP") && !r.contains_key("bad"));
    }
}
