//! virtio-net on a real microVM: the test makes a network namespace with a
//! TAP, runs `ember-vmm` inside it (`ip netns exec`), and a UDP peer in the
//! same namespace talks with the kernel-less `net_test` guest. Both sides
//! check content: the peer verifies each datagram's SHA-256 and sequence,
//! the guest verifies each acknowledgement. The guest also pings the peer
//! (answered by the host kernel) and finds nothing else reachable; before all
//! that it sends transmit chains that lie (outside memory, bad lengths, wrong
//! direction), which the device must return without harm.

use std::net::UdpSocket;
use std::time::Duration;

use ember_tests::blknet::{can_netns, guest, sha256_hex, NetNs, Vm};
use ember_tests::probes::ember_vmm;

const PEER: &str = "10.77.0.1";
const GUEST: &str = "10.77.0.2";
const MAC: &str = "06:00:0a:4d:00:02";
const PORT: u16 = 5555;
const COUNT: u64 = 40;

/// Checks one datagram `seq=N sha=HEX BODY`; returns the ack to send.
fn check(msg: &[u8], want_seq: u64) -> Result<String, String> {
    let text = std::str::from_utf8(msg).map_err(|e| e.to_string())?;
    let mut parts = text.splitn(3, ' ');
    let seq = parts
        .next()
        .and_then(|s| s.strip_prefix("seq="))
        .and_then(|s| s.parse::<u64>().ok());
    let sha = parts.next().and_then(|s| s.strip_prefix("sha="));
    let body = parts.next().unwrap_or("");
    if seq != Some(want_seq) {
        return Err(format!("sequence {seq:?}, want {want_seq}"));
    }
    let sha = sha.ok_or("no sha")?;
    if sha != sha256_hex(body.as_bytes()) || body.len() < 16 {
        return Err(format!("seq {want_seq}: body does not match its sha256"));
    }
    Ok(format!("ack seq={want_seq} sha={sha}"))
}

#[test]
fn guest_exchanges_checked_udp_with_a_peer_and_reaches_nothing_else() {
    if let Err(why) = can_netns() {
        println!("SKIPPED: {why}");
        return;
    }
    let ns = NetNs::new(
        &format!("ember-net-{}", std::process::id()),
        "embtap0",
        &format!("{PEER}/24"),
    );
    let peer = ns.spawn_in(move || -> Result<u64, String> {
        let sock = UdpSocket::bind((PEER, PORT)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2048];
        for seq in 0..COUNT {
            let (n, from) = sock
                .recv_from(&mut buf)
                .map_err(|e| format!("seq {seq}: {e}"))?;
            if from.to_string() != format!("{GUEST}:{PORT}") {
                return Err(format!("datagram from {from}"));
            }
            let ack = check(&buf[..n], seq)?;
            sock.send_to(ack.as_bytes(), from)
                .map_err(|e| e.to_string())?;
        }
        Ok(COUNT)
    });
    let mut args: Vec<String> = vec!["netns".into(), "exec".into(), ns.name.clone()];
    args.extend([
        ember_vmm().display().to_string(),
        "--kernel".into(),
        guest("net_test").display().to_string(),
        "--cmdline".into(),
        format!("udp {GUEST} {PEER} {PORT} {COUNT}"),
        "--net".into(),
        format!("{},{MAC}", ns.tap),
        "--mem-mib".into(),
        "64".into(),
        "--console".into(),
        "stdout".into(),
        "--timeout-ms".into(),
        "90000".into(),
    ]);
    let vm = Vm::spawn("ip", &args);
    let (code, stderr, seen) = vm.finish(Duration::from_secs(120));
    let console = seen.join("\n");
    let peer = peer.join().expect("peer thread");
    assert_eq!(
        peer,
        Ok(COUNT),
        "peer side; console:\n{console}\nstderr:\n{stderr}"
    );
    assert_eq!(code, Some(0), "console:\n{console}\nstderr:\n{stderr}");
    assert!(
        console.contains(&format!("net: mac={}", MAC.replace(':', ""))),
        "{console}"
    );
    assert!(console.contains("net: hostile tx ok"), "{console}");
    assert!(console.contains("net: icmp echo ok"), "{console}");
    assert!(
        console.contains(&format!("net: udp {COUNT} datagrams acked ok")),
        "{console}"
    );
    assert!(console.contains("net: isolated ok"), "{console}");
    // The TAP exists only inside the namespace.
    let root = std::process::Command::new("ip")
        .args(["link", "show", &ns.tap])
        .output()
        .expect("ip link");
    assert!(!root.status.success(), "TAP visible outside the namespace");
}

#[test]
fn missing_tap_is_a_clean_startup_error() {
    if let Err(why) = can_netns() {
        println!("SKIPPED: {why}");
        return;
    }
    // A fresh namespace without TAPs: ember-vmm may create the TAP as root,
    // so point it at a name that cannot be a TAP (too long for IFNAMSIZ).
    let args: Vec<String> = vec![
        "--kernel".into(),
        guest("net_test").display().to_string(),
        "--net".into(),
        "this-name-is-far-too-long-for-a-tap".into(),
        "--console".into(),
        "off".into(),
    ];
    let vm = Vm::spawn(&ember_vmm().display().to_string(), &args);
    let (code, stderr, _) = vm.finish(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("network-interfaces"), "{stderr}");
}
