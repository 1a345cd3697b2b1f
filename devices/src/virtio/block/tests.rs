//! virtio-block tests over an in-memory guest and a real temporary file:
//! every request type, every refusal, the rate limiter, and a bounded random
//! ("fuzz") run over arbitrary descriptor chains.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::handler::{process_queue, BlockMetrics};
use super::request::*;
use super::test_guest::{TestGuest, DATA};
use super::{CacheType, Disk};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig};

const W: bool = true;
const R: bool = false;

/// A temporary file removed on drop.
pub(crate) struct TempFile(pub PathBuf);
impl TempFile {
    pub(crate) fn new(tag: &str, contents: &[u8]) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ember-blk-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&p, contents).unwrap();
        TempFile(p)
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn header(g: &TestGuest, at: u64, kind: u32, sector: u64) {
    g.mem.write_obj(kind, GuestAddress(at)).unwrap();
    g.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
    g.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
}

fn unlimited() -> RateLimiter {
    RateLimiter::new(&RateLimiterConfig::default()).unwrap()
}

struct Rig {
    g: TestGuest,
    disk: Disk,
    file: TempFile,
    rl: RateLimiter,
    m: BlockMetrics,
    q: virtio_queue::Queue,
}

impl Rig {
    fn new(sectors: usize, read_only: bool) -> Self {
        let file = TempFile::new("rig", &pattern(sectors * 512, 7));
        let disk = Disk::open(
            &file.0,
            read_only,
            CacheType::Writeback,
            "drive-with-a-very-long-name",
        )
        .unwrap();
        let g = TestGuest::new(1 << 20, 16);
        let q = g.queue();
        Rig {
            g,
            disk,
            file,
            rl: unlimited(),
            m: BlockMetrics::default(),
            q,
        }
    }
    fn run(&mut self) -> super::handler::QueueRun {
        process_queue(
            &mut self.q,
            &self.g.mem,
            &mut self.disk,
            &mut self.rl,
            &mut self.m,
        )
    }
    fn status(&self, at: u64) -> u8 {
        self.g.mem.read_obj(GuestAddress(at)).unwrap()
    }
}

#[test]
fn write_then_read_back_with_split_buffers() {
    let mut r = Rig::new(64, false);
    let data = pattern(1024, 99);
    r.g.mem
        .write_slice(&data, GuestAddress(DATA + 0x100))
        .unwrap();
    header(&r.g, DATA, 1, 3);
    // Header split over two descriptors, data over two, status alone.
    r.g.add_chain(&[
        (DATA, 10, R),
        (DATA + 10, 6, R),
        (DATA + 0x100, 300, R),
        (DATA + 0x22c, 724, R),
        (DATA + 0x800, 1, W),
    ]);
    let run = r.run();
    assert_eq!((run.completed, run.broken), (1, false));
    assert_eq!(r.status(DATA + 0x800), STATUS_OK);
    let file = std::fs::read(&r.file.0).unwrap();
    assert_eq!(&file[3 * 512..5 * 512], &data[..]);
    assert_eq!(
        &file[..3 * 512],
        &pattern(64 * 512, 7)[..3 * 512],
        "neighbours untouched"
    );

    header(&r.g, DATA + 0x1000, 0, 3);
    r.g.add_chain(&[
        (DATA + 0x1000, 16, R),
        (DATA + 0x2000, 1024, W),
        (DATA + 0x3000, 1, W),
    ]);
    let run = r.run();
    assert_eq!(run.completed, 1);
    let mut back = vec![0u8; 1024];
    r.g.mem
        .read_slice(&mut back, GuestAddress(DATA + 0x2000))
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(r.g.used()[1].1, 1025, "used length counts data and status");
    assert_eq!(r.m.read_bytes, 1024);
    assert_eq!(r.m.write_bytes, 1024);
}

#[test]
fn flush_get_id_and_unsupported() {
    let mut r = Rig::new(8, false);
    header(&r.g, DATA, 4, 0);
    r.g.add_chain(&[(DATA, 16, R), (DATA + 0x20, 1, W)]);
    header(&r.g, DATA + 0x100, 8, 0);
    r.g.add_chain(&[
        (DATA + 0x100, 16, R),
        (DATA + 0x200, 20, W),
        (DATA + 0x220, 1, W),
    ]);
    header(&r.g, DATA + 0x300, 5, 0); // DISCARD's neighbour: not a known type
    r.g.add_chain(&[(DATA + 0x300, 16, R), (DATA + 0x320, 1, W)]);
    assert_eq!(r.run().completed, 3);
    assert_eq!(r.status(DATA + 0x20), STATUS_OK);
    assert_eq!(r.status(DATA + 0x220), STATUS_OK);
    let mut id = [0u8; 20];
    r.g.mem
        .read_slice(&mut id, GuestAddress(DATA + 0x200))
        .unwrap();
    assert_eq!(&id, b"drive-with-a-very-lo");
    assert_eq!(r.status(DATA + 0x320), STATUS_UNSUPP);
    assert_eq!(r.g.used(), vec![(0, 1), (2, 21), (5, 1)]);
}

#[test]
fn refusals_get_ioerr_and_leave_the_disk_alone() {
    let mut r = Rig::new(8, false);
    let before = std::fs::read(&r.file.0).unwrap();
    type Case = (u32, u64, Vec<(u64, u32, bool)>);
    let cases: Vec<Case> = vec![
        // past the end, and a sector count that overflows
        (1, 7, vec![(DATA + 0x1000, 1024, R)]),
        (0, u64::MAX, vec![(DATA + 0x1000, 512, W)]),
        // not a multiple of 512, and zero length
        (1, 0, vec![(DATA + 0x1000, 511, R)]),
        (0, 0, vec![]),
        // write data in a device-writable buffer (wrong direction)
        (1, 0, vec![(DATA + 0x1000, 512, W)]),
        // read with extra readable data
        (0, 0, vec![(DATA + 0x1000, 512, R), (DATA + 0x2000, 512, W)]),
        // flush carrying data
        (4, 0, vec![(DATA + 0x1000, 512, R)]),
        // a data buffer outside guest memory
        (1, 0, vec![(0xfff_ff00, 512, R)]),
        // readable after writable
        (0, 0, vec![(DATA + 0x1000, 512, W), (DATA + 0x2000, 16, R)]),
        // GET_ID with too small a buffer
        (8, 0, vec![(DATA + 0x1000, 8, W)]),
    ];
    for (i, (kind, sector, mid)) in cases.iter().enumerate() {
        let at = DATA + 0x8000 + 0x100 * i as u64;
        header(&r.g, at, *kind, *sector);
        let mut chain = vec![(at, 16, R)];
        chain.extend(mid);
        chain.push((at + 0x80, 1, W));
        r.g.add_chain(&chain);
        r.g.mem.write_obj(0xffu8, GuestAddress(at + 0x80)).unwrap();
        let run = r.run();
        assert_eq!(run.completed, 1, "case {i}");
        assert!(run.first_error.is_some(), "case {i}");
        assert_eq!(r.status(at + 0x80), STATUS_IOERR, "case {i}");
    }
    assert_eq!(std::fs::read(&r.file.0).unwrap(), before);
    assert_eq!(r.m.errors, cases.len() as u64);

    // Header too short, and no status byte at all: returned with length 0.
    r.g.add_chain(&[(DATA, 8, R), (DATA + 0x80, 1, W)]);
    r.g.add_chain(&[(DATA, 16, R)]);
    assert_eq!(r.run().completed, 2);
    assert_eq!(r.status(DATA + 0x80), STATUS_IOERR);
    assert_eq!(r.g.used().last(), Some(&(1, 0)));
}

#[test]
fn read_only_drive_refuses_writes_but_reads_and_flushes() {
    let mut r = Rig::new(8, true);
    assert!(r.disk.geometry().read_only);
    header(&r.g, DATA, 1, 0);
    r.g.add_chain(&[(DATA, 16, R), (DATA + 0x1000, 512, R), (DATA + 0x80, 1, W)]);
    header(&r.g, DATA + 0x100, 0, 1);
    r.g.add_chain(&[
        (DATA + 0x100, 16, R),
        (DATA + 0x2000, 512, W),
        (DATA + 0x180, 1, W),
    ]);
    header(&r.g, DATA + 0x200, 4, 0);
    r.g.add_chain(&[(DATA + 0x200, 16, R), (DATA + 0x280, 1, W)]);
    assert_eq!(r.run().completed, 3);
    assert_eq!(
        [
            r.status(DATA + 0x80),
            r.status(DATA + 0x180),
            r.status(DATA + 0x280)
        ],
        [STATUS_IOERR, STATUS_OK, STATUS_OK]
    );
    let mut got = vec![0u8; 512];
    r.g.mem
        .read_slice(&mut got, GuestAddress(DATA + 0x2000))
        .unwrap();
    assert_eq!(got, pattern(8 * 512, 7)[512..1024]);
}

#[test]
fn rate_limiter_holds_the_queue_and_resumes_in_order() {
    let mut r = Rig::new(64, false);
    let now = Arc::new(AtomicU64::new(0));
    let c = now.clone();
    let cfg: RateLimiterConfig =
        serde_json::from_str(r#"{"bandwidth":{"size":2048,"refill_time":100}}"#).unwrap();
    r.rl = RateLimiter::with_clock(&cfg, Arc::new(move || c.load(Ordering::SeqCst))).unwrap();
    for i in 0..3u64 {
        let at = DATA + 0x100 * i;
        header(&r.g, at, 0, i);
        r.g.add_chain(&[(at, 16, R), (DATA + 0x4000, 1024, W), (at + 0x80, 1, W)]);
    }
    let mut q = r.g.queue();
    let run = process_queue(&mut q, &r.g.mem, &mut r.disk, &mut r.rl, &mut r.m);
    assert_eq!((run.completed, run.throttled), (2, true));
    assert_eq!(
        r.rl.blocked_for(),
        Some(std::time::Duration::from_millis(50))
    );
    // Nothing moves while blocked, even if time passed.
    now.store(60_000_000, Ordering::SeqCst);
    assert_eq!(
        process_queue(&mut q, &r.g.mem, &mut r.disk, &mut r.rl, &mut r.m).completed,
        0
    );
    r.rl.force_unblock();
    let run = process_queue(&mut q, &r.g.mem, &mut r.disk, &mut r.rl, &mut r.m);
    assert_eq!((run.completed, run.throttled), (1, false));
    assert_eq!(
        r.g.used().iter().map(|u| u.0).collect::<Vec<_>>(),
        vec![0, 3, 6]
    );
}

#[test]
fn lying_avail_index_and_looping_chains_terminate() {
    let mut r = Rig::new(8, false);
    // A chain whose next points back at itself.
    header(&r.g, DATA, 0, 0);
    r.g.write_desc(0, DATA, 16, 1, 1);
    r.g.write_desc(1, DATA + 0x1000, 512, 1 | 2, 1);
    r.g.publish(0);
    let run = r.run();
    assert_eq!(run.completed, 1);
    // An avail index far ahead of what the queue can hold: nothing popped.
    r.g.set_avail_idx(1000);
    assert_eq!(r.run().completed, 0);
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz run.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Bounded random run: arbitrary descriptor tables (bad addresses, loops,
/// indirect tables, wrong flags) and arbitrary headers. The handler must
/// return every chain it pops, never panic, and never touch the disk outside
/// requests it reported OK.
#[test]
fn fuzz_random_chains_bounded() {
    let iterations: u64 = std::env::var("EMBER_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut r = Rig::new(32, false);
    let mut q = r.g.queue();
    for _ in 0..iterations {
        // Half the chains start well-formed (header, data, status) and get one
        // field mutated at random; the rest are noise from the start.
        let at = DATA + rng.below(0x8000) / 16 * 16;
        let kind = [0u32, 1, 4, 8, 11, rng.next() as u32][rng.below(6) as usize];
        header(&r.g, at, kind, rng.below(40));
        let data_w = if kind == 1 { 0 } else { 2 };
        let mut descs = vec![
            (at, 16u32, 1u16),
            (
                DATA + 0x9000,
                if kind == 8 {
                    20
                } else {
                    512 * (1 + rng.below(3) as u32)
                },
                1 | data_w,
            ),
            (DATA + 0xf000, 1, 2),
        ];
        if kind == 4 {
            descs.remove(1);
        }
        let noise = rng.below(2) == 0;
        if noise {
            descs = (0..1 + rng.below(6))
                .map(|_| (rng.next(), rng.next() as u32, rng.below(8) as u16))
                .collect();
        }
        if rng.below(3) == 0 {
            let i = rng.below(descs.len() as u64) as usize;
            match rng.below(4) {
                0 => {
                    descs[i].0 = [
                        rng.next(),
                        (1 << 20) - rng.below(1024),
                        DATA + rng.below(0x8000),
                    ][rng.below(3) as usize]
                }
                1 => {
                    descs[i].1 =
                        [rng.next() as u32, rng.below(1024) as u32, 0][rng.below(3) as usize]
                }
                2 => descs[i].2 ^= 1 << rng.below(3),
                _ => descs.truncate(i),
            }
        }
        let head = rng.below(16) as u16;
        for (k, &(addr, len, flags)) in descs.iter().enumerate() {
            let idx = (head + k as u16) % 16;
            let mut next = (idx + 1) % 16;
            if rng.below(16) == 0 {
                next = rng.below(20) as u16;
            }
            let mut flags = flags & !1;
            if k + 1 < descs.len() || rng.below(16) == 0 {
                flags |= 1;
            }
            r.g.write_desc(idx, addr, len, flags, next);
        }
        r.g.publish(head);
        let before = r.g.used_idx();
        let run = process_queue(&mut q, &r.g.mem, &mut r.disk, &mut r.rl, &mut r.m);
        assert!(!run.broken);
        assert_eq!(run.completed, 1);
        assert_eq!(r.g.used_idx(), before.wrapping_add(1));
    }
    assert_eq!(r.m.ok + r.m.errors, iterations);
    assert!(
        r.m.errors > 0 && r.m.ok > 0,
        "the run should exercise both paths: {:?}",
        r.m
    );
}
