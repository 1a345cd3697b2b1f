//! Test guest for virtio-net: builds Ethernet/ARP/IPv4/UDP/ICMP frames itself
//! and talks to a host peer through the TAP. Arguments pick a mode:
//! - `udp GUEST_IP PEER_IP PORT COUNT`: first sends transmit chains a
//!   hostile guest would (outside memory, lying lengths, wrong direction,
//!   too short, too long), each of which must come back; resolves the peer by ARP, pings it
//!   (ICMP echo, answered by the host kernel), then sends COUNT UDP datagrams
//!   `seq=<i> sha=<hex of body> <random body>`; the peer must answer each
//!   with `ack seq=<i> sha=<same hex>`; last, probes that nothing else
//!   answers (ARP for another address, ICMP to an outside address);
//! - `bench GUEST_IP PEER_IP PORT BYTES`: sends BYTES of UDP payload to the
//!   peer then `END`; then sends `GO` and counts what the peer sends until
//!   its `END`; prints `net: bench tx_ns=.. rx_bytes=.. rx_ns=..`.
//!
//! Exit codes: 0 success, 3 a check failed, 4 bad arguments / no device.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use ember_abi::guest::device_id;
use ember_guest::virtio::net::{NetDevice, MAX_FRAME};
use ember_guest::virtio::queue::Buf;
use ember_rt::{println, StartInfo};
use sha2::{Digest, Sha256};

ember_rt::entry!(main);

const BROADCAST: [u8; 6] = [0xff; 6];
const ETH_ARP: u16 = 0x0806;
const ETH_IP: u16 = 0x0800;
const PROTO_ICMP: u8 = 1;
const PROTO_UDP: u8 = 17;
/// An address outside the test network: it must stay unreachable.
const OUTSIDE: [u8; 4] = [1, 1, 1, 1];

fn wait() {
    ember_rt::wait(1000);
}

fn hex(d: &[u8]) -> String {
    let mut s = String::new();
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_ip(s: &str) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut it = s.split('.');
    for b in &mut ip {
        *b = it.next()?.parse().ok()?;
    }
    it.next().is_none().then_some(ip)
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct Net {
    dev: NetDevice,
    mac: [u8; 6],
    ip: [u8; 4],
    peer_ip: [u8; 4],
    peer_mac: [u8; 6],
    ip_id: u16,
    rx: Vec<u8>,
}

impl Net {
    fn eth(&self, dst: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + body.len());
        f.extend_from_slice(&dst);
        f.extend_from_slice(&self.mac);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn arp_request(&self, target: [u8; 4]) -> Vec<u8> {
        let mut a = Vec::with_capacity(28);
        a.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        a.extend_from_slice(&self.mac);
        a.extend_from_slice(&self.ip);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target);
        self.eth(BROADCAST, ETH_ARP, &a)
    }

    fn ipv4(&mut self, dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        self.ip_id = self.ip_id.wrapping_add(1);
        let total = (20 + payload.len()) as u16;
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        h[6] = 0x40; // don't fragment
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&self.ip);
        h[16..20].copy_from_slice(&dst);
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let mut p = Vec::with_capacity(20 + payload.len());
        p.extend_from_slice(&h);
        p.extend_from_slice(payload);
        self.eth(self.peer_mac, ETH_IP, &p)
    }

    fn udp(&mut self, dst: [u8; 4], port: u16, data: &[u8]) -> Vec<u8> {
        let mut u = Vec::with_capacity(8 + data.len());
        u.extend_from_slice(&port.to_be_bytes());
        u.extend_from_slice(&port.to_be_bytes());
        u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
        u.extend_from_slice(data);
        self.ipv4(dst, PROTO_UDP, &u)
    }

    fn icmp_echo(&mut self, dst: [u8; 4], seq: u16, data: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(8 + data.len());
        m.extend_from_slice(&[8, 0, 0, 0, 0x45, 0x4d]);
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(data);
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        self.ipv4(dst, PROTO_ICMP, &m)
    }

    fn send(&mut self, f: &[u8]) -> bool {
        match self.dev.send(f, &mut wait) {
            Ok(()) => true,
            Err(e) => {
                println!("net: send failed: {e}");
                false
            }
        }
    }

    /// Receives frames for up to `tries` idle waits; returns the first `accept` says yes to.
    fn recv_until<T>(
        &mut self,
        tries: u32,
        mut accept: impl FnMut(&Net, &[u8]) -> Option<T>,
    ) -> Option<T> {
        let mut buf = core::mem::take(&mut self.rx);
        buf.resize(MAX_FRAME, 0);
        let mut out = None;
        // `tries` counts idle waits only: a stream of frames never times out.
        let mut idle = 0;
        while idle <= tries {
            match self.dev.recv(&mut buf) {
                Ok(Some(n)) => {
                    if let Some(v) = accept(self, &buf[..n.min(buf.len())]) {
                        out = Some(v);
                        break;
                    }
                }
                Ok(None) => {
                    idle += 1;
                    wait();
                }
                Err(_) => break,
            }
        }
        self.rx = buf;
        out
    }

    /// The IPv4 payload of `f` if it is for us from `from` with `proto`.
    fn ip_payload<'a>(&self, f: &'a [u8], from: [u8; 4], proto: u8) -> Option<&'a [u8]> {
        if f.len() < 34 || f[12..14] != ETH_IP.to_be_bytes() || f[0..6] != self.mac {
            return None;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || ip[9] != proto {
            return None;
        }
        (ip[12..16] == from && ip[16..20] == self.ip).then(|| &ip[ihl..total])
    }

    fn udp_payload<'a>(&self, f: &'a [u8], port: u16) -> Option<&'a [u8]> {
        let u = self.ip_payload(f, self.peer_ip, PROTO_UDP)?;
        if u.len() < 8 || u[2..4] != port.to_be_bytes() {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
        (len >= 8 && len <= u.len()).then(|| &u[8..len])
    }

    fn resolve(&mut self, target: [u8; 4], tries: u32) -> Option<[u8; 6]> {
        for _ in 0..3 {
            let req = self.arp_request(target);
            if !self.send(&req) {
                return None;
            }
            let got = self.recv_until(tries, |n, f| {
                let a = f.get(14..42)?;
                let ok = f[12..14] == ETH_ARP.to_be_bytes()
                    && a[6..8] == [0, 2]
                    && a[14..18] == target
                    && a[24..28] == n.ip;
                ok.then(|| {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&a[8..14]);
                    m
                })
            });
            if got.is_some() {
                return got;
            }
        }
        None
    }
}

fn main(info: &'static StartInfo) -> i32 {
    let args: Vec<&str> = info.args().split_whitespace().collect();
    let (Some(&mode), Some(ip), Some(peer_ip), Some(port), Some(n)) = (
        args.first(),
        args.get(1).and_then(|s| parse_ip(s)),
        args.get(2).and_then(|s| parse_ip(s)),
        args.get(3).and_then(|s| s.parse::<u16>().ok()),
        args.get(4).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        println!("net: usage: udp|bench GUEST_IP PEER_IP PORT N");
        return 4;
    };
    let Some(d) = info
        .devices()
        .iter()
        .find(|d| d.device_id == device_id::NET)
    else {
        println!("net: no net device");
        return 4;
    };
    // SAFETY: the VMM announced a virtio-mmio net window at this address;
    // nothing else in this guest drives it.
    let dev = match unsafe { NetDevice::new(d.base as usize) } {
        Ok(dev) => dev,
        Err(e) => {
            println!("net: init failed: {e}");
            return 3;
        }
    };
    let Some(mac) = dev.mac() else {
        println!("net: device offers no MAC");
        return 3;
    };
    println!("net: mac={}", hex(&mac));
    let mut net = Net {
        dev,
        mac,
        ip,
        peer_ip,
        peer_mac: BROADCAST,
        ip_id: 0,
        rx: Vec::new(),
    };
    if mode == "udp" && !hostile_tx(&mut net, info.mem_size) {
        return 3;
    }
    let Some(peer_mac) = net.resolve(peer_ip, 2000) else {
        println!("net: no ARP reply from the peer");
        return 3;
    };
    net.peer_mac = peer_mac;
    println!("net: peer mac={}", hex(&peer_mac));
    let ok = match mode {
        "udp" => udp(&mut net, port, n, info),
        "bench" => bench(&mut net, port, n),
        _ => {
            println!("net: unknown mode {mode}");
            return 4;
        }
    };
    if ok {
        0
    } else {
        3
    }
}

fn udp(net: &mut Net, port: u16, count: u64, info: &StartInfo) -> bool {
    // ICMP echo to the peer: the host kernel answers with our data.
    let data = *b"ember icmp probe 0123456789abcdef";
    let ping = net.icmp_echo(net.peer_ip, 1, &data);
    net.send(&ping);
    let pong = net.recv_until(2000, |n, f| {
        let m = n.ip_payload(f, n.peer_ip, PROTO_ICMP)?;
        (m.len() >= 8 && m[0] == 0 && m[8..] == data).then_some(())
    });
    println!(
        "net: icmp echo {}",
        if pong.is_some() { "ok" } else { "FAILED" }
    );
    if pong.is_none() {
        return false;
    }
    let mut state = u64::from_le_bytes([
        info.random_seed[0],
        info.random_seed[1],
        info.random_seed[2],
        info.random_seed[3],
        info.random_seed[4],
        info.random_seed[5],
        info.random_seed[6],
        info.random_seed[7],
    ]) | 1;
    for seq in 0..count {
        let len = 16 + (state % 1200) as usize;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b'a' + (state % 26) as u8
            })
            .collect();
        let sha = hex(&Sha256::digest(&body));
        let mut msg = String::new();
        let _ = write!(msg, "seq={seq} sha={sha} ");
        let mut payload = msg.into_bytes();
        payload.extend_from_slice(&body);
        let f = net.udp(net.peer_ip, port, &payload);
        net.send(&f);
        let mut want = String::new();
        let _ = write!(want, "ack seq={seq} sha={sha}");
        let got = net.recv_until(2000, |n, f| {
            (n.udp_payload(f, port)? == want.as_bytes()).then_some(())
        });
        if got.is_none() {
            println!("net: udp seq={seq} no valid ack");
            return false;
        }
    }
    println!("net: udp {count} datagrams acked ok");
    // Isolation: nobody else answers.
    let mut stranger = net.peer_ip;
    stranger[3] = stranger[3].wrapping_add(100);
    let arp = net.resolve(stranger, 100);
    let ping = net.icmp_echo(OUTSIDE, 2, &data);
    net.send(&ping);
    let outside = net.recv_until(200, |n, f| n.ip_payload(f, OUTSIDE, PROTO_ICMP).map(|_| ()));
    let isolated = arp.is_none() && outside.is_none();
    println!("net: isolated {}", if isolated { "ok" } else { "FAILED" });
    isolated
}

fn bench(net: &mut Net, port: u16, bytes: u64) -> bool {
    let chunk = [0x42u8; 1472];
    let t0 = ember_rt::now_ns();
    let mut sent = 0u64;
    let mut batch = 0;
    while sent < bytes {
        let f = net.udp(net.peer_ip, port, &chunk);
        if let Err(e) = net.dev.send_batched(&f, &mut wait) {
            println!("net: send failed: {e}");
            return false;
        }
        sent += chunk.len() as u64;
        batch += 1;
        if batch % 32 == 0 {
            net.dev.kick_tx();
        }
    }
    net.dev.kick_tx();
    net.dev.flush_tx(&mut wait);
    let t1 = ember_rt::now_ns();
    // Let the peer drain its socket before the control datagrams (~100 ms;
    // a wait may end early on a device interrupt, hence the bounded loop).
    let until = ember_rt::now_ns() + 100_000_000;
    for _ in 0..100 {
        if ember_rt::now_ns() >= until {
            break;
        }
        ember_rt::wait(10_000);
    }
    for _ in 0..3 {
        let f = net.udp(net.peer_ip, port, b"END");
        net.send(&f);
    }
    let go = net.udp(net.peer_ip, port, b"GO");
    net.send(&go);
    let (mut rx_bytes, mut started, mut t2, mut t3) = (0u64, false, 0u64, 0u64);
    let _ = net.recv_until(20_000, |n, f| {
        let p = n.udp_payload(f, port)?;
        if !started {
            started = true;
            t2 = ember_rt::now_ns();
        }
        if p == b"END" {
            t3 = ember_rt::now_ns();
            return Some(());
        }
        rx_bytes += p.len() as u64;
        None
    });
    println!(
        "net: bench tx_bytes={sent} tx_ns={} rx_bytes={rx_bytes} rx_ns={}",
        t1 - t0,
        t3.saturating_sub(t2)
    );
    true
}

/// Transmit chains a hostile guest would send; each must come back (the
/// device drops the frame), and the device must keep working afterwards.
fn hostile_tx(net: &mut Net, mem_size: u64) -> bool {
    let big = alloc::vec![0x11u8; 70_000];
    let small = [0u8; 5];
    let b = |addr: u64, len: u32, device_writes: bool| Buf {
        addr,
        len,
        device_writes,
    };
    let cases = [
        [b(mem_size + 4096, 1000, false)],
        [b(small.as_ptr() as u64, 0xffff_f000, false)],
        [b(big.as_ptr() as u64, 1000, true)],
        [b(small.as_ptr() as u64, small.len() as u32, false)],
        [b(big.as_ptr() as u64, big.len() as u32, false)],
    ];
    for c in &cases {
        if let Err(e) = net.dev.send_raw(c, &mut wait) {
            println!("net: hostile tx: {e}");
            return false;
        }
    }
    println!("net: hostile tx ok");
    true
}
