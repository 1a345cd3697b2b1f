//! In-process tests of the vsock device + Unix muxer: a real transport, a
//! real event manager and real Unix sockets, with an in-memory guest
//! (`test_guest.rs`) speaking the virtio-vsock protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use super::muxer_conn::CONN_TX_BUF;
use super::test_guest::TestGuest;
use super::{op, shut, Hdr, HOST_CID};

const CID: u64 = 42;

fn tmp_path(name: &str) -> PathBuf {
    super::test_guest::tmp_uds(name)
}

fn from_guest(src_port: u32, dst_port: u32, op: u16, len: u32) -> Hdr {
    super::test_guest::guest_hdr(CID, src_port, dst_port, op, len)
}

fn host_stream(uds: &PathBuf) -> UnixStream {
    let s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Host connects with CONNECT 52; the guest accepts. Returns the stream,
/// the host port and the first line the host read.
fn host_initiated(g: &mut TestGuest, uds: &PathBuf) -> (UnixStream, u32) {
    let mut s = host_stream(uds);
    s.write_all(b"CONNECT 52\n").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1, "{pkts:?}");
    let req = pkts[0].0;
    assert_eq!(
        (req.op, req.dst_port, req.dst_cid, req.src_cid),
        (op::REQUEST, 52, CID, HOST_CID)
    );
    assert!(req.src_port >= 1 << 30);
    g.send(&from_guest(52, req.src_port, op::RESPONSE, 0), &[]);
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {}\n", req.src_port));
    (s, req.src_port)
}

#[test]
fn host_initiated_echo_and_rst() {
    let uds = tmp_path("hi");
    let mut g = TestGuest::new(CID, &uds);
    let (mut s, hp) = host_initiated(&mut g, &uds);
    s.write_all(b"ping").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].0.op, pkts[0].1.as_slice()), (op::RW, &b"ping"[..]));
    assert_eq!(pkts[0].0.fwd_cnt, 0, "the OK line is not guest data");
    assert!(
        g.wire.0.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no interrupt for rx"
    );
    g.send(&from_guest(52, hp, op::RW, 4), b"pong");
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    // Host half-closes: the guest hears SHUTDOWN(SEND).
    s.shutdown(std::net::Shutdown::Write).unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!((pkts[0].0.op, pkts[0].0.flags), (op::SHUTDOWN, shut::SEND));
    // The guest resets: the host stream ends.
    g.send(&from_guest(52, hp, op::RST, 0), &[]);
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert_eq!(g.dev.lock().unwrap().backend().conn_count(), 0);
}

#[test]
fn host_connect_to_a_port_nobody_listens_on_is_closed() {
    let uds = tmp_path("nolisten");
    let mut g = TestGuest::new(CID, &uds);
    let mut s = host_stream(&uds);
    s.write_all(b"CONNECT 99\n").unwrap();
    g.pump();
    let req = g.recv()[0].0;
    g.send(&from_guest(99, req.src_port, op::RST, 0), &[]);
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b).unwrap(), 0);
    // A malformed handshake is dropped too.
    let mut s = host_stream(&uds);
    s.write_all(b"HELLO 1\n").unwrap();
    g.pump();
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert!(g.recv().is_empty());
}

#[test]
fn guest_initiated_connect_and_refusal() {
    let uds = tmp_path("gi");
    let listener = UnixListener::bind(format!("{}_53", uds.display())).unwrap();
    let mut g = TestGuest::new(CID, &uds);
    g.send(&from_guest(1000, 53, op::REQUEST, 0), &[]);
    let pkts = g.recv();
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.dst_port, pkts[0].0.src_port),
        (op::RESPONSE, 1000, 53)
    );
    let (mut s, _) = listener.accept().unwrap();
    g.send(&from_guest(1000, 53, op::RW, 5), b"hello");
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello");
    s.write_all(b"world").unwrap();
    g.pump();
    let pkts = g.recv();
    assert_eq!(pkts[0].1, b"world");
    // Nobody on port 54: RST.
    g.send(&from_guest(1001, 54, op::REQUEST, 0), &[]);
    let pkts = g.recv();
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (op::RST, 1001));
    // Full shutdown from the guest: the host sees EOF and the guest gets RST.
    g.send(
        &Hdr {
            flags: shut::SEND | shut::RCV,
            ..from_guest(1000, 53, op::SHUTDOWN, 0)
        },
        &[],
    );
    assert_eq!(s.read(&mut b).unwrap(), 0);
    assert_eq!(g.recv()[0].0.op, op::RST);
}

#[test]
fn host_to_guest_respects_guest_credit() {
    let uds = tmp_path("credit");
    let mut g = TestGuest::new(CID, &uds);
    let (mut s, hp) = host_initiated(&mut g, &uds);
    // The guest advertises 1000 bytes; the host sends 5000.
    g.send(
        &Hdr {
            buf_alloc: 1000,
            ..from_guest(52, hp, op::CREDIT_UPDATE, 0)
        },
        &[],
    );
    s.write_all(&[7u8; 5000]).unwrap();
    g.pump();
    let got: usize = g.recv().iter().map(|p| p.1.len()).sum();
    assert_eq!(got, 1000);
    // It consumes them: 1000 more.
    g.send(
        &Hdr {
            buf_alloc: 1000,
            fwd_cnt: 1000,
            ..from_guest(52, hp, op::CREDIT_UPDATE, 0)
        },
        &[],
    );
    let got: usize = g.recv().iter().map(|p| p.1.len()).sum();
    assert_eq!(got, 1000);
}

#[test]
fn guest_to_a_host_that_never_reads_is_bounded() {
    let uds = tmp_path("bounded");
    let listener = UnixListener::bind(format!("{}_60", uds.display())).unwrap();
    let mut g = TestGuest::new(CID, &uds);
    g.send(&from_guest(2000, 60, op::REQUEST, 0), &[]);
    let resp = g.recv()[0].0;
    assert_eq!((resp.op, resp.buf_alloc), (op::RESPONSE, CONN_TX_BUF));
    let (_s, _) = listener.accept().unwrap(); // never read
                                              // The guest sends exactly what credit allows (socket buffer + our buffer),
                                              // tracking the device's fwd_cnt like a driver does.
    let chunk = vec![1u8; 32 * 1024];
    let (mut sent, mut fwd) = (0u32, 0u32);
    for _ in 0..200 {
        if sent.wrapping_sub(fwd) + chunk.len() as u32 > CONN_TX_BUF {
            // Out of credit: ask, as a driver does; stop when none comes back.
            g.send(&from_guest(2000, 60, op::CREDIT_REQUEST, 0), &[]);
            for (h, _) in g.recv() {
                fwd = h.fwd_cnt;
            }
            if sent.wrapping_sub(fwd) + chunk.len() as u32 > CONN_TX_BUF {
                break;
            }
        }
        g.send(&from_guest(2000, 60, op::RW, chunk.len() as u32), &chunk);
        sent += chunk.len() as u32;
        for (h, _) in g.recv() {
            fwd = h.fwd_cnt;
        }
    }
    let buffered = g.dev.lock().unwrap().backend().buffered_bytes();
    assert!(buffered <= CONN_TX_BUF as usize, "{buffered}");
    assert!(
        sent > CONN_TX_BUF,
        "the socket buffer took nothing? sent {sent}"
    );
    assert_eq!(sent - fwd, buffered as u32);
    // A guest that ignores credit is reset, and nothing more is buffered.
    for _ in 0..16 {
        g.send(&from_guest(2000, 60, op::RW, chunk.len() as u32), &chunk);
    }
    let pkts = g.recv();
    assert!(
        pkts.iter().any(|p| p.0.op == op::RST),
        "{:?}",
        pkts.iter().map(|p| p.0.op).collect::<Vec<_>>()
    );
    assert_eq!(g.dev.lock().unwrap().backend().buffered_bytes(), 0);
}

#[test]
fn bad_tx_chains_are_refused_without_panic() {
    let uds = tmp_path("bad");
    let mut g = TestGuest::new(CID, &uds);
    // Lying length, write-only descriptor, short header, outside memory.
    let mut b = [0u8; 44];
    from_guest(1, 53, op::REQUEST, 60000).encode(&mut b);
    g.mem_write(0x80_0000, &b);
    g.put_desc(1, 0, 0x80_0000, 44, 0, 0);
    g.put_desc(1, 1, 0x80_0000, 44, 2, 0);
    g.put_desc(1, 2, 0x80_0000, 20, 0, 0);
    g.put_desc(1, 3, u64::MAX - 10, 44, 0, 0);
    for i in 0..4 {
        g.publish(1, i);
    }
    g.pump();
    assert_eq!(g.take_used(1).len(), 4);
    assert!(
        g.recv().is_empty(),
        "a refused packet must not reach the backend"
    );
    // A packet spoofing another source CID is dropped.
    g.send(
        &Hdr {
            src_cid: 7,
            ..from_guest(1, 53, op::REQUEST, 0)
        },
        &[],
    );
    assert!(g.recv().is_empty());
    // An avail index far ahead breaks the ring: NEEDS_RESET, no spinning.
    g.set_avail_idx(1, 1000);
    g.pump();
    let mut st = [0u8; 4];
    use crate::bus::BusDevice;
    g.transport.read(0x70, &mut st);
    assert_ne!(u32::from_le_bytes(st) & 64, 0);
}

#[test]
fn a_guest_that_never_reads_rx_cannot_grow_the_control_queue() {
    let uds = tmp_path("ctrlflood");
    let mut g = TestGuest::new(CID, &uds);
    // Each packet to a port nobody uses earns an RST; the guest never takes them.
    for i in 0..(super::muxer::MAX_CTRL as u32 + 200) {
        g.send(&from_guest(5000 + i, 9, op::RW, 0), &[]);
    }
    let pending = g.dev.lock().unwrap().backend().pending_control();
    assert!(pending <= super::muxer::MAX_CTRL, "{pending}");
    assert!(
        pending >= super::muxer::MAX_CTRL - 64,
        "{pending}: the guest's RX buffers hold at most 64"
    );
}

#[test]
fn packets_for_any_cid_but_the_hosts_never_leave_the_vm() {
    // Another VM's CID, the guest's own, and made-up ones: dropped without an
    // answer, and no host connection; the same request to the host connects.
    let uds = tmp_path("cid");
    let listener = UnixListener::bind(format!("{}_53", uds.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut g = TestGuest::new(CID, &uds);
    for dst in [CID + 1, CID, 0, u64::from(u32::MAX)] {
        g.send(
            &Hdr {
                dst_cid: dst,
                ..from_guest(1000, 53, op::REQUEST, 0)
            },
            &[],
        );
        assert!(g.recv().is_empty(), "answered a packet for CID {dst}");
        assert!(
            listener.accept().is_err(),
            "a packet for CID {dst} reached the host"
        );
    }
    g.send(&from_guest(1000, 53, op::REQUEST, 0), &[]);
    assert_eq!(g.recv()[0].0.op, op::RESPONSE);
    assert!(listener.accept().is_ok());
}

#[test]
fn a_full_tx_ring_is_taken_in_budgeted_turns() {
    use super::device::TX_BUDGET;
    use super::test_guest::QSIZE;
    let uds = tmp_path("budget");
    let mut g = TestGuest::new(CID, &uds);
    g.take_used(1);
    // A whole ring of packets (for a connection nobody has: each is
    // answered with a reset), one notification.
    for _ in 0..QSIZE {
        g.stage(&from_guest(2000, 9, op::RW, 4), b"data");
    }
    g.notify(1);
    // One turn of the event loop takes at most the budget...
    g.em.run_with_timeout(0).unwrap();
    let first = g.take_used(1).len();
    assert_eq!(first, TX_BUDGET, "one event took {first} of {QSIZE} chains");
    // ...and re-arms itself, so the rest follows on the next turns.
    g.pump();
    assert_eq!(first + g.take_used(1).len(), usize::from(QSIZE));
}
