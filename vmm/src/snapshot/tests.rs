//! Snapshots of real kernel-less microVMs (hand-assembled guests, /dev/kvm):
//! a guest paused mid-computation and loaded into a new VM finishes with the
//! uninterrupted result; clones of one snapshot see distinct seeds; hostile
//! state and memory files are refused with a typed error.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ember_abi::error::chain;
use vm_memory::{Bytes, GuestAddress};

use super::state::{StateError, VmState};
use super::vcpu_state::InvalidVcpu;
use super::*;
use crate::boot::elf::tests::{build_with_code, temp_file};
use crate::config::{ConsoleConfig, VmConfig};
use crate::exit::VmExit;

const MEM_MIB: u64 = 16;
pub(super) const TOP: u64 = MEM_MIB << 20;

/// An LCG of `n` rounds: `mov ecx,n; xor eax,eax; L: imul eax,eax,0x41c64e6d;
/// add eax,12345; dec ecx; jnz L; mov [rsp],rax; out 0xf4,al; jmp $`.
fn lcg_code(n: u32) -> Vec<u8> {
    let mut c = vec![0xb9];
    c.extend_from_slice(&n.to_le_bytes());
    c.extend_from_slice(&[0x31, 0xc0]);
    c.extend_from_slice(&[0x69, 0xc0, 0x6d, 0x4e, 0xc6, 0x41]);
    c.extend_from_slice(&[0x05, 0x39, 0x30, 0x00, 0x00]);
    c.extend_from_slice(&[0xff, 0xc9, 0x75, 0xf1]);
    c.extend_from_slice(&[0x48, 0x89, 0x04, 0x24, 0xe6, 0xf4, 0xeb, 0xfe]);
    c
}

fn lcg(n: u32) -> u32 {
    (0..n).fold(0u32, |x, _| x.wrapping_mul(0x41c6_4e6d).wrapping_add(12345))
}

/// Spins until `StartInfo::generation` is non-zero (it is a clone), then
/// stores the generation at top-32 and the first 8 seed bytes at top-24 and
/// exits with 5.
fn clone_code() -> Vec<u8> {
    let gen = std::mem::offset_of!(ember_abi::guest::StartInfo, generation) as u32;
    let seed = std::mem::offset_of!(ember_abi::guest::StartInfo, random_seed) as u8;
    let mut c = vec![0x48, 0x89, 0xfb, 0x48, 0x8b, 0x83];
    c.extend_from_slice(&gen.to_le_bytes());
    c.extend_from_slice(&[0x48, 0x85, 0xc0, 0x74, 0xf4]);
    c.extend_from_slice(&[0x48, 0x89, 0x44, 0x24, 0xe8]);
    c.extend_from_slice(&[0x48, 0x8b, 0x43, seed]);
    c.extend_from_slice(&[0x48, 0x89, 0x44, 0x24, 0xf0]);
    c.extend_from_slice(&[0xb0, 0x05, 0xe6, 0xf4, 0xeb, 0xfe]);
    c
}

fn started_vm(code: &[u8], tag: &str) -> Vm {
    started_vm_with(code, tag, Default::default())
}

/// [`started_vm`] with these config sections (`VmConfig::devices`).
fn started_vm_with(
    code: &[u8],
    tag: &str,
    devices: std::collections::BTreeMap<String, serde_json::Value>,
) -> Vm {
    let (_, path) = temp_file(&build_with_code(Some((b"EMBER", 1)), code), tag);
    let cfg = VmConfig {
        kernel: path.clone(),
        mem_mib: MEM_MIB,
        console: ConsoleConfig::Off,
        timeout_ms: Some(30_000),
        devices,
        ..VmConfig::default()
    };
    let mut vm = Vm::build(&cfg.validate().unwrap(), Instant::now()).unwrap();
    std::fs::remove_file(path).unwrap();
    vm.start().unwrap();
    vm
}

/// Pauses `vm` once its loop counter (rcx, counting down from `from`) has
/// moved below `below` and is not yet 0: mid-loop, however late the vCPU
/// thread got the CPU on a loaded machine.
fn pause_mid_loop(vm: &Vm, below: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(10));
        vm.pause(Duration::from_secs(2)).unwrap();
        let rcx = vm.save_vcpus(Duration::from_secs(2)).unwrap()[0].regs.rcx;
        if rcx > 0 && rcx < below {
            return rcx;
        }
        assert!(
            Instant::now() < until,
            "the guest loop never moved: rcx {rcx}"
        );
        vm.resume(Duration::from_secs(2)).unwrap();
    }
}

pub(super) struct Files {
    pub state: PathBuf,
    pub mem: PathBuf,
}

impl Files {
    fn new(tag: &str) -> Files {
        let base = std::env::temp_dir().join(format!("ember-snap-{}-{tag}", std::process::id()));
        Files {
            state: base.with_extension("state"),
            mem: base.with_extension("mem"),
        }
    }

    pub fn params(&self) -> LoadParams {
        LoadParams {
            state_path: self.state.clone(),
            mem_path: self.mem.clone(),
            backend: MemBackend::File,
            console: ConsoleConfig::Off,
            timeout_ms: Some(30_000),
            track_dirty_pages: false,
            vsock_uds_override: None,
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.state);
        let _ = std::fs::remove_file(&self.mem);
    }
}

/// A snapshot of the clone guest, spinning before any clone ran.
pub(super) fn clone_snapshot(tag: &str) -> Files {
    let files = Files::new(tag);
    let vm = started_vm(&clone_code(), tag);
    std::thread::sleep(Duration::from_millis(5));
    vm.pause(Duration::from_secs(2)).unwrap();
    create(&vm, &files.state, &files.mem).unwrap();
    files
}

#[test]
fn a_guest_snapshotted_mid_computation_finishes_with_the_uninterrupted_result() {
    let n = 300_000_000;
    let expected = lcg(n);
    let uninterrupted = started_vm(&lcg_code(n), "lcg-full");
    assert_eq!(uninterrupted.wait(), VmExit::Guest(expected & 0xff));
    let full: u64 = uninterrupted
        .memory()
        .read_obj(GuestAddress(TOP - 8))
        .unwrap();
    assert_eq!(full, expected as u64);

    let files = Files::new("lcg");
    let mut vm = started_vm(&lcg_code(n), "lcg-snap");
    pause_mid_loop(&vm, n as u64);
    let report = create(&vm, &files.state, &files.mem).unwrap();
    vm.stop();
    drop(vm);
    let saved = VmState::from_bytes(&std::fs::read(&files.state).unwrap()).unwrap();
    let left = saved.vcpus[0].regs.rcx;
    assert!(
        left > 0 && left < n as u64,
        "not mid-computation: rcx {left}"
    );
    assert!(report.memory_data_bytes < 1 << 20, "{report:?}");

    let mut restored = load(&files.params(), Instant::now()).unwrap();
    restored.start().unwrap();
    // A full snapshot over the file the VM runs from would truncate it under
    // the guest: refused, and the guest runs on.
    restored.pause(Duration::from_secs(2)).unwrap();
    let again = Files::new("lcg-again");
    let e = create(&restored, &again.state, &files.mem).unwrap_err();
    assert!(matches!(e, SnapshotError::MemoryFileInUse(_)), "{e}");
    restored.resume(Duration::from_secs(2)).unwrap();
    assert_eq!(restored.wait(), VmExit::Guest(expected & 0xff));
    let result: u64 = restored.memory().read_obj(GuestAddress(TOP - 8)).unwrap();
    assert_eq!(result, expected as u64);
    restored.stop();
}

#[test]
fn clones_of_one_snapshot_see_a_new_generation_and_distinct_seeds() {
    let files = clone_snapshot("clones");
    let mut seeds = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut vm = load(&files.params(), Instant::now()).unwrap();
        vm.start().unwrap();
        assert_eq!(vm.wait(), VmExit::Guest(5));
        let gen: u64 = vm.memory().read_obj(GuestAddress(TOP - 32)).unwrap();
        let seed: u64 = vm.memory().read_obj(GuestAddress(TOP - 24)).unwrap();
        assert_eq!(gen, 1);
        assert!(seeds.insert(seed), "two clones drew seed {seed:#x}");
        vm.stop();
    }
}

#[test]
fn a_vm_with_an_entropy_device_is_snapshotted_and_restored_with_it() {
    let n = 300_000_000;
    let expected = lcg(n);
    let files = Files::new("entropy");
    let entropy = [("entropy".to_string(), serde_json::json!({}))].into();
    let mut vm = started_vm_with(&lcg_code(n), "lcg-entropy", entropy);
    pause_mid_loop(&vm, n as u64);
    create(&vm, &files.state, &files.mem).unwrap();
    vm.stop();
    drop(vm);
    let saved = VmState::from_bytes(&std::fs::read(&files.state).unwrap()).unwrap();
    assert_eq!(saved.virtio.len(), 1);
    assert_eq!(saved.virtio[0].section, "entropy");
    let mut restored = load(&files.params(), Instant::now()).unwrap();
    restored.start().unwrap();
    assert_eq!(restored.wait(), VmExit::Guest(expected & 0xff));
    restored.stop();
    // The config names the device but no state was saved for it: refused.
    let mut s = saved.clone();
    s.virtio.clear();
    let e = load_with_state(&files, &s.to_bytes())
        .map(|_| ())
        .unwrap_err();
    assert!(chain(&e).contains("device set"), "{e}");
}

#[test]
fn snapshot_needs_a_paused_vm() {
    let files = Files::new("running");
    let vm = started_vm(&clone_code(), "running");
    let e = create(&vm, &files.state, &files.mem).unwrap_err();
    assert!(
        matches!(
            e,
            SnapshotError::Vm(VmError::SaveVcpu(0, SaveError::Running(0)))
        ),
        "{e}"
    );
}

fn load_with_state(files: &Files, bytes: &[u8]) -> Result<Vm, SnapshotError> {
    std::fs::write(&files.state, bytes).unwrap();
    load(&files.params(), Instant::now())
}

/// The error of a load that must fail (`Vm` has no Debug for unwrap_err).
fn err(r: Result<Vm, SnapshotError>) -> SnapshotError {
    match r {
        Ok(_) => panic!("a hostile snapshot was loaded"),
        Err(e) => e,
    }
}

#[test]
fn hostile_state_files_are_refused_with_a_clear_error() {
    let files = clone_snapshot("hostile");
    let good = std::fs::read(&files.state).unwrap();
    let state = VmState::from_bytes(&good).unwrap();

    // Truncated anywhere.
    for cut in (0..good.len())
        .step_by(7)
        .chain([0, 1, 51, 52, good.len() - 1])
    {
        let e = err(load_with_state(&files, &good[..cut]));
        assert!(
            matches!(
                e,
                SnapshotError::State(StateError::Codec(_) | StateError::Length { .. })
            ),
            "cut {cut}: {e}"
        );
    }
    // Any flipped bit: header fields or checksum.
    for bit in (0..good.len() * 8).step_by(61) {
        let mut b = good.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let e = err(load_with_state(&files, &b));
        assert!(matches!(e, SnapshotError::State(_)), "bit {bit}: {e}");
    }
    // Version 1 (before virtio device states) and a future version.
    for v in [1u32, 3] {
        let mut b = good.clone();
        b[8..12].copy_from_slice(&v.to_le_bytes());
        assert!(matches!(
            load_with_state(&files, &b),
            Err(SnapshotError::State(StateError::WrongVersion { found })) if found == v
        ));
    }
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        load_with_state(&files, &b),
        Err(SnapshotError::State(StateError::BadMagic))
    ));
    let mut b = good.clone();
    b.push(0);
    assert!(matches!(
        load_with_state(&files, &b),
        Err(SnapshotError::State(StateError::Length { .. }))
    ));

    // Well-formed, checksummed, but wrong in meaning.
    let refused = |s: &VmState| err(load_with_state(&files, &s.to_bytes()));
    let mut s = state.clone();
    s.mem_size = 32 << 20;
    let e = refused(&s);
    assert!(chain(&e).contains("memory regions"), "{e}");
    s.mem_size = (16 << 20) + 4096;
    assert!(chain(&refused(&s)).contains("memory size"));
    let mut s = state.clone();
    s.vcpus[0].sregs.cs.dpl = 0;
    assert!(matches!(
        refused(&s),
        SnapshotError::State(StateError::Vcpu {
            index: 0,
            source: InvalidVcpu::NotEntryState("CS")
        })
    ));
    let mut s = state.clone();
    s.vcpus[0].sregs.cr3 = 0x5000;
    assert!(chain(&refused(&s)).contains("CR3"));
    let mut s = state.clone();
    s.vcpus[0].regs.rflags |= 1 << 17;
    assert!(chain(&refused(&s)).contains("RFLAGS"));
    let mut s = state.clone();
    s.vcpus[0].regs.rip = 1 << 40;
    assert!(chain(&refused(&s)).contains("RIP"));
    let mut s = state.clone();
    s.vcpus[0].msrs.push((0xc000_0082, 0x1234));
    assert!(chain(&refused(&s)).contains("MSR"));
    let mut s = state.clone();
    s.device_config = r#"{"vsock":{"guest_cid":3,"uds_path":"/tmp/x"}}"#.into();
    assert!(
        chain(&refused(&s)).contains("device set"),
        "{}",
        refused(&s)
    );
    let mut s = state.clone();
    s.vcpus.push(s.vcpus[0].clone());
    // Two vCPUs in a state whose memory holds a one-vCPU guest: the
    // start-info page of the memory file does not match.
    let e = refused(&s);
    assert!(chain(&e).contains("cannot restore"), "{e}");

    // The memory file must match the state file's layout.
    std::fs::write(&files.state, &good).unwrap();
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(&files.mem)
        .unwrap();
    mem.set_len(8 << 20).unwrap();
    let e = err(load(&files.params(), Instant::now()));
    assert!(
        matches!(
            e,
            SnapshotError::Memory(MemoryFileError::Size {
                actual: 0x80_0000,
                expected: 0x100_0000
            })
        ),
        "{e}"
    );
    // A FIFO (or a device) in place of a file: refused, never waited on.
    let fifo = files.state.with_extension("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (state, mem) in [(&fifo, &files.mem), (&files.state, &fifo)] {
        let p = LoadParams {
            state_path: state.clone(),
            mem_path: mem.clone(),
            ..files.params()
        };
        let e = err(load(&p, Instant::now()));
        assert!(chain(&e).contains("not a regular file"), "{}", chain(&e));
    }
    std::fs::remove_file(&fifo).unwrap();
    let p = LoadParams {
        state_path: "/dev/zero".into(),
        ..files.params()
    };
    assert!(chain(&err(load(&p, Instant::now()))).contains("not a regular file"));
    // A state file of a huge size is refused before it is parsed.
    let big = vec![0u8; MAX_STATE_FILE + 1];
    assert!(matches!(
        load_with_state(&files, &big),
        Err(SnapshotError::State(StateError::TooLarge(_)))
    ));
}

#[test]
fn a_vm_loaded_paused_runs_nothing_until_resumed() {
    let files = clone_snapshot("paused");
    let mut vm = load(&files.params(), Instant::now()).unwrap();
    vm.start_paused(Duration::from_secs(2)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // The clone guest writes its seed at once when it runs.
    let seed: u64 = vm.memory().read_obj(GuestAddress(TOP - 24)).unwrap();
    assert_eq!(seed, 0, "a vCPU ran before resume");
    vm.resume(Duration::from_secs(2)).unwrap();
    assert_eq!(vm.wait(), VmExit::Guest(5));
    let seed: u64 = vm.memory().read_obj(GuestAddress(TOP - 24)).unwrap();
    assert_ne!(seed, 0);
    vm.stop();
}

/// `rounds` passes of an LCG over one u32 in each of the 512 pages of
/// [8 MiB, 10 MiB), each adding to what the page holds; then their sum at
/// [rsp] and as the exit code.
fn page_lcg_code(rounds: u32) -> Vec<u8> {
    let mut c = vec![0xb9];
    c.extend_from_slice(&rounds.to_le_bytes());
    c.extend_from_slice(&[0x31, 0xc0]); // xor eax,eax
    c.extend_from_slice(&[0xbf, 0x00, 0x00, 0x80, 0x00]); // outer: mov edi,0x800000
    c.extend_from_slice(&[0x69, 0xc0, 0x6d, 0x4e, 0xc6, 0x41]); // inner: imul
    c.extend_from_slice(&[0x05, 0x39, 0x30, 0x00, 0x00]); // add eax,12345
    c.extend_from_slice(&[0x01, 0x07]); // add [rdi],eax
    c.extend_from_slice(&[0x81, 0xc7, 0x00, 0x10, 0x00, 0x00]); // add edi,4096
    c.extend_from_slice(&[0x81, 0xff, 0x00, 0x00, 0xa0, 0x00]); // cmp edi,0xa00000
    c.extend_from_slice(&[0x72, 0xe5, 0xff, 0xc9, 0x75, 0xdc]); // jb inner; dec ecx; jnz outer
    c.extend_from_slice(&[0xbf, 0x00, 0x00, 0x80, 0x00, 0x31, 0xd2]); // mov edi,..; xor edx,edx
    c.extend_from_slice(&[0x03, 0x17]); // sum: add edx,[rdi]
    c.extend_from_slice(&[0x81, 0xc7, 0x00, 0x10, 0x00, 0x00]);
    c.extend_from_slice(&[0x81, 0xff, 0x00, 0x00, 0xa0, 0x00]);
    c.extend_from_slice(&[0x72, 0xf0]); // jb sum
    c.extend_from_slice(&[0x48, 0x89, 0x14, 0x24, 0x89, 0xd0, 0xe6, 0xf4, 0xeb, 0xfe]);
    c
}

fn page_lcg(rounds: u32) -> u32 {
    let mut pages = [0u32; 512];
    let mut x = 0u32;
    for _ in 0..rounds {
        for p in pages.iter_mut() {
            x = x.wrapping_mul(0x41c6_4e6d).wrapping_add(12345);
            *p = p.wrapping_add(x);
        }
    }
    pages.iter().fold(0u32, |a, &p| a.wrapping_add(p))
}

#[test]
fn a_diff_snapshot_over_a_full_one_restores_the_later_state() {
    let rounds = 300_000;
    let expected = page_lcg(rounds);
    let (_, path) = temp_file(
        &build_with_code(Some((b"EMBER", 1)), &page_lcg_code(rounds)),
        "diff",
    );
    let cfg = VmConfig {
        kernel: path.clone(),
        mem_mib: MEM_MIB,
        console: ConsoleConfig::Off,
        timeout_ms: Some(30_000),
        track_dirty_pages: true,
        ..VmConfig::default()
    };
    let mut vm = Vm::build(&cfg.validate().unwrap(), Instant::now()).unwrap();
    std::fs::remove_file(path).unwrap();
    vm.start().unwrap();
    let (full, diff) = (Files::new("full"), Files::new("diff"));
    let c1 = pause_mid_loop(&vm, rounds as u64);
    create(&vm, &full.state, &full.mem).unwrap();
    vm.resume(Duration::from_secs(2)).unwrap();
    pause_mid_loop(&vm, c1);
    std::fs::copy(&full.mem, &diff.mem).unwrap();
    let r = create_typed(&vm, &diff.state, &diff.mem, SnapshotType::Diff).unwrap();
    vm.stop();
    drop(vm);
    let at_full = VmState::from_bytes(&std::fs::read(&full.state).unwrap()).unwrap();
    let at_diff = VmState::from_bytes(&std::fs::read(&diff.state).unwrap()).unwrap();
    let (c1, c2) = (at_full.vcpus[0].regs.rcx, at_diff.vcpus[0].regs.rcx);
    assert!(c2 > 0 && c2 < c1, "not mid-loop twice: rcx {c1} then {c2}");
    // 512 buffer pages, the VMM's 12, the stack: nothing else was written.
    assert!(r.memory_data_bytes <= 530 * 4096, "{r:?}");

    let mut restored = load(&diff.params(), Instant::now()).unwrap();
    restored.start().unwrap();
    assert_eq!(restored.wait(), VmExit::Guest(expected & 0xff));
    let sum: u64 = restored.memory().read_obj(GuestAddress(TOP - 8)).unwrap();
    assert_eq!(sum, expected as u64);
    restored.stop();

    // The later registers over the earlier memory give another sum: the
    // diff is what carried the pages.
    std::fs::copy(&full.mem, &diff.mem).unwrap();
    let mut mixed = load(&diff.params(), Instant::now()).unwrap();
    mixed.start().unwrap();
    assert!(matches!(mixed.wait(), VmExit::Guest(_)));
    let sum: u64 = mixed.memory().read_obj(GuestAddress(TOP - 8)).unwrap();
    assert_ne!(sum, expected as u64);
    mixed.stop();
}

#[test]
fn a_diff_snapshot_needs_dirty_tracking() {
    let files = Files::new("nodirty");
    let vm = started_vm(&clone_code(), "nodirty");
    vm.pause(Duration::from_secs(2)).unwrap();
    let e = create_typed(&vm, &files.state, &files.mem, SnapshotType::Diff).unwrap_err();
    assert!(matches!(e, SnapshotError::DiffWithoutDirtyTracking), "{e}");
}
