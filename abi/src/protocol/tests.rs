//! Protocol tests: round trips of every message, truncation, lying lengths,
//! and a bounded seeded fuzz run over random and mutated frames.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::*;

fn samples() -> Vec<Message> {
    vec![
        Message::Ready {
            protocol_version: VERSION,
            agent: AgentKind::Wasm,
            agent_version: "ember-wasm-agent 0.1.0".into(),
            boot_us: 1234,
            timings: vec![("heap".into(), 3), ("vsock".into(), 250)],
        },
        Message::Init {
            function_name: "hello".into(),
            function_version: "$LATEST".into(),
            handler: "handle".into(),
            code: Code::Inline(vec![0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]),
            env: vec![("K".into(), "v=1".into()), ("EMPTY".into(), String::new())],
            memory_mib: 128,
            timeout_ms: 3000,
            random_seed: [7; 32],
            trees: vec![],
            ephemeral_mib: 0,
        },
        Message::Init {
            function_name: "py".into(),
            function_version: "3".into(),
            handler: "app.handler".into(),
            code: Code::Path("/var/task".into()),
            env: vec![],
            memory_mib: 512,
            timeout_ms: 900_000,
            random_seed: [0; 32],
            trees: vec![
                Tree {
                    mount: "/var/task".into(),
                    archive: b"PK\x05\x06".to_vec(),
                },
                Tree {
                    mount: "/opt".into(),
                    archive: vec![],
                },
            ],
            ephemeral_mib: 512,
        },
        Message::Init {
            function_name: "fast".into(),
            function_version: "1".into(),
            handler: String::new(),
            code: Code::Compiled(vec![b'E', b'M', b'A', b'O', b'T', 0, 1, 2, 3]),
            env: vec![],
            memory_mib: 128,
            timeout_ms: 1000,
            random_seed: [3; 32],
            trees: vec![],
            ephemeral_mib: 10_240,
        },
        Message::InitDone { init_us: 42 },
        Message::InitError {
            error_type: "Runtime.InvalidModule".into(),
            message: "bad".into(),
            init_us: 1,
            document: Vec::new(),
        },
        Message::Invoke {
            request_id: "8f5c0c1e-req".into(),
            payload: b"{\"a\":1}".to_vec(),
            deadline_ms: 1_800_000_000_000,
            invoked_function_arn: "arn:aws:lambda:local:000000000000:function:hello".into(),
            trace_id: "Root=1-abc".into(),
            client_context: String::new(),
            cognito_identity: "{}".into(),
        },
        Message::Result {
            request_id: "r".into(),
            payload: vec![0xff; 300],
            duration_us: 5,
            max_memory_kib: 64,
        },
        Message::Error {
            request_id: "r".into(),
            error_type: "Sandbox.Timedout".into(),
            message: "Task timed out after 3.00 seconds".into(),
            fatal: true,
            duration_us: 3_000_000,
            max_memory_kib: 1024,
            document: b"{\"errorMessage\":\"bad\"}".to_vec(),
        },
        Message::Log {
            request_id: "r".into(),
            stream: LogStream::Stderr,
            line: "héllo".into(),
        },
        Message::Shutdown,
        Message::Fatal {
            message: "panic at agent.rs:1".into(),
        },
    ]
}

#[test]
fn every_message_round_trips() {
    for msg in samples() {
        let frame = msg.to_frame().unwrap();
        assert_eq!(&frame[..2], &MAGIC);
        assert_eq!(frame[2], VERSION);
        let body_len = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        assert_eq!(body_len + HEADER_LEN, frame.len());
        assert_eq!(
            decode(&frame),
            Decode::Frame {
                message: msg.clone(),
                len: frame.len()
            }
        );
    }
}

#[test]
fn every_strict_prefix_is_incomplete() {
    for msg in samples() {
        let frame = msg.to_frame().unwrap();
        for cut in 0..frame.len() {
            match decode(&frame[..cut]) {
                Decode::Incomplete { needed } => {
                    let expect = if cut < HEADER_LEN {
                        HEADER_LEN - cut
                    } else {
                        frame.len() - cut
                    };
                    assert_eq!(needed, expect);
                }
                other => panic!("prefix {cut} of {msg:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn streaming_decoder_handles_any_chunking() {
    let mut stream = Vec::new();
    for msg in samples() {
        msg.encode(&mut stream).unwrap();
    }
    for chunk in [1, 2, 7, 64, 4096] {
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            dec.push(piece);
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, samples(), "chunk size {chunk}");
        assert_eq!(dec.buffered(), 0);
    }
}

#[test]
fn oversize_payloads_are_refused_both_ways() {
    let big = Message::Result {
        request_id: "r".into(),
        payload: vec![0; MAX_PAYLOAD + 1],
        duration_us: 0,
        max_memory_kib: 0,
    };
    let mut out = vec![1, 2, 3];
    assert_eq!(
        big.encode(&mut out),
        Err(ProtocolError::PayloadTooLarge {
            len: MAX_PAYLOAD + 1
        })
    );
    assert_eq!(
        out,
        vec![1, 2, 3],
        "a failed encode leaves the buffer alone"
    );
    // Exactly the limit is fine.
    let ok = Message::Result {
        request_id: "r".into(),
        payload: vec![0; MAX_PAYLOAD],
        duration_us: 0,
        max_memory_kib: 0,
    };
    let frame = ok.to_frame().unwrap();
    assert!(matches!(decode(&frame), Decode::Frame { .. }));
    // A hand-made frame whose payload field is one byte over is refused on decode.
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(b'r');
    body.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_le_bytes());
    body.resize(body.len() + MAX_PAYLOAD + 1, 0);
    body.extend_from_slice(&[0; 16]);
    let frame = raw_frame(6, &body);
    assert!(matches!(
        decode(&frame),
        Decode::Error {
            error: ProtocolError::PayloadTooLarge { .. },
            skip: Some(_)
        }
    ));
}

/// A borrowed `Invoke` (what emberd sends without building a `Message`)
/// encodes to exactly the frame of `Message::Invoke`, and is refused alike
/// over the payload cap.
#[test]
fn a_borrowed_invoke_encodes_as_the_message() {
    for payload in [Vec::new(), b"{\"a\":1}".to_vec(), vec![7; MAX_PAYLOAD]] {
        let by_ref = InvokeRef {
            request_id: "8f5c0c1e-req",
            payload: &payload,
            deadline_ms: 1_800_000_000_000,
            invoked_function_arn: "arn:aws:lambda:local:000000000000:function:hello",
            trace_id: "Root=1-abc",
            client_context: "",
            cognito_identity: "{}",
        };
        let message = Message::Invoke {
            request_id: by_ref.request_id.into(),
            payload: payload.clone(),
            deadline_ms: by_ref.deadline_ms,
            invoked_function_arn: by_ref.invoked_function_arn.into(),
            trace_id: by_ref.trace_id.into(),
            client_context: by_ref.client_context.into(),
            cognito_identity: by_ref.cognito_identity.into(),
        };
        let frame = by_ref.to_frame().unwrap();
        assert_eq!(frame, message.to_frame().unwrap());
        assert_eq!(frame.capacity(), frame.len(), "allocated once, at its size");
    }
    let big = vec![0; MAX_PAYLOAD + 1];
    let by_ref = InvokeRef {
        request_id: "r",
        payload: &big,
        deadline_ms: 0,
        invoked_function_arn: "",
        trace_id: "",
        client_context: "",
        cognito_identity: "",
    };
    let mut out = vec![1, 2, 3];
    assert_eq!(
        by_ref.encode(&mut out),
        Err(ProtocolError::PayloadTooLarge {
            len: MAX_PAYLOAD + 1
        })
    );
    assert_eq!(out, vec![1, 2, 3]);
}

fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAGIC);
    f.push(VERSION);
    f.push(kind);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn header_errors_are_fatal_and_body_errors_skippable() {
    // Lying frame length beyond the cap: refused from the header alone.
    let mut f = raw_frame(6, &[]);
    f[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode(&f),
        Decode::Error {
            error: ProtocolError::FrameTooLarge { .. },
            skip: None
        }
    ));
    // Init may be larger than other frames, but not unbounded.
    let mut f = raw_frame(2, &[]);
    f[4..8].copy_from_slice(&((MAX_INIT_FRAME + 1) as u32).to_le_bytes());
    assert!(matches!(decode(&f), Decode::Error { skip: None, .. }));
    // Wrong magic, caught at the first byte.
    assert!(matches!(
        decode(b"G"),
        Decode::Error {
            error: ProtocolError::BadMagic(_),
            skip: None
        }
    ));
    assert!(matches!(
        decode(b"GET / HTTP/1.1\r\n"),
        Decode::Error { skip: None, .. }
    ));
    // Wrong version.
    let mut f = raw_frame(9, &[]);
    f[2] = VERSION + 1;
    assert_eq!(
        decode(&f),
        Decode::Error {
            error: ProtocolError::UnsupportedVersion(VERSION + 1),
            skip: None
        }
    );
    // A string whose length lies (longer than the body): skippable.
    let f = raw_frame(10, &100u32.to_le_bytes());
    assert!(matches!(
        decode(&f),
        Decode::Error {
            error: ProtocolError::Truncated { .. },
            skip: Some(12)
        }
    ));
    // Unknown kind, trailing bytes, bad UTF-8, bad enum: skippable.
    assert!(matches!(
        decode(&raw_frame(200, &[])),
        Decode::Error {
            error: ProtocolError::UnknownKind(200),
            ..
        }
    ));
    assert!(matches!(
        decode(&raw_frame(9, &[0])),
        Decode::Error {
            error: ProtocolError::TrailingBytes(1),
            ..
        }
    ));
    let f = raw_frame(10, &[1, 0, 0, 0, 0xff]);
    assert!(matches!(
        decode(&f),
        Decode::Error {
            error: ProtocolError::BadUtf8,
            skip: Some(13)
        }
    ));
    // A list count that claims far more items than the body could hold.
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    let f = raw_frame(1, &body[8..]);
    assert!(matches!(
        decode(&f),
        Decode::Error {
            error: ProtocolError::Truncated { .. },
            skip: Some(_)
        }
    ));
}

#[test]
fn decoder_skips_a_bad_frame_and_goes_on_but_stops_when_out_of_sync() {
    let mut dec = FrameDecoder::new();
    dec.push(&raw_frame(9, &[1, 2, 3]));
    dec.push(&Message::Shutdown.to_frame().unwrap());
    assert_eq!(dec.next_message(), Err(ProtocolError::TrailingBytes(3)));
    assert_eq!(dec.next_message(), Ok(Some(Message::Shutdown)));
    assert_eq!(dec.next_message(), Ok(None));
    dec.push(b"garbage");
    assert!(dec.next_message().is_err());
    dec.push(&Message::Shutdown.to_frame().unwrap());
    assert!(dec.next_message().is_err(), "stays failed once out of sync");
    assert_eq!(dec.buffered(), 0);
}

use crate::xorshift::XorShift64Star as Rng;

/// Feeds `bytes` to both decoders; neither may panic, and whatever the
/// stateless decoder accepts must re-encode to the same bytes.
fn check_input(bytes: &[u8]) {
    match decode(bytes) {
        Decode::Frame { message, len } => {
            assert!(len <= bytes.len());
            assert_eq!(
                message.to_frame().unwrap(),
                &bytes[..len],
                "accepted frames are canonical"
            );
        }
        Decode::Incomplete { needed } => assert!(needed > 0),
        Decode::Error { skip: Some(n), .. } => assert!(n >= HEADER_LEN && n <= bytes.len()),
        Decode::Error { skip: None, .. } => {}
    }
    let mut dec = FrameDecoder::new();
    dec.push(bytes);
    for _ in 0..bytes.len() + 1 {
        match dec.next_message() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {}
            Err(_) => break,
        }
    }
}

#[test]
fn fuzz_random_and_mutated_frames() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let frames: Vec<Vec<u8>> = samples().iter().map(|m| m.to_frame().unwrap()).collect();
    for round in 0..20_000 {
        let input = match round % 4 {
            // Pure noise, sometimes with a valid header prefix.
            0 => {
                let mut v: Vec<u8> = (0..rng.index(64)).map(|_| rng.next() as u8).collect();
                if rng.index(2) == 0 && v.len() >= 4 {
                    v[..3].copy_from_slice(&[MAGIC[0], MAGIC[1], VERSION]);
                    v[3] = (rng.index(12)) as u8;
                }
                v
            }
            // A valid frame with a few bytes flipped.
            1 => {
                let mut v = frames[rng.index(frames.len())].clone();
                for _ in 0..1 + rng.index(4) {
                    let i = rng.index(v.len());
                    v[i] ^= 1 << rng.index(8);
                }
                v
            }
            // A valid frame truncated, with a lying length patched in.
            2 => {
                let mut v = frames[rng.index(frames.len())].clone();
                v.truncate(rng.index(v.len() + 1));
                if v.len() >= HEADER_LEN {
                    let lie = match rng.index(3) {
                        0 => rng.next() as u32,
                        1 => (v.len() - HEADER_LEN) as u32,
                        _ => rng.index(64) as u32,
                    };
                    v[4..8].copy_from_slice(&lie.to_le_bytes());
                }
                v
            }
            // Two frames glued, the second corrupted inside a length field.
            _ => {
                let mut v = frames[rng.index(frames.len())].clone();
                let second = &frames[rng.index(frames.len())];
                let at = v.len();
                v.extend_from_slice(second);
                if second.len() > HEADER_LEN + 4 {
                    let i = at + HEADER_LEN + rng.index(second.len() - HEADER_LEN - 3);
                    v[i..i + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                }
                v
            }
        };
        check_input(&input);
    }
}

#[test]
fn errors_print_useful_messages() {
    let e = ProtocolError::FrameTooLarge { len: 10, max: 5 };
    assert_eq!(
        e.to_string(),
        "frame body of 10 bytes exceeds the 5-byte cap"
    );
}

#[cfg(feature = "std")]
#[test]
fn blocking_io_round_trip_and_eof() {
    let mut wire = Vec::new();
    for m in samples() {
        write_frame(&mut wire, &m).unwrap();
    }
    let mut r = std::io::Cursor::new(&wire[..]);
    for m in samples() {
        assert_eq!(read_frame(&mut r).unwrap(), m);
    }
    assert!(matches!(read_frame(&mut r), Err(FrameIoError::Closed)));
    let mut cut = std::io::Cursor::new(&wire[..wire.len() - 1]);
    let mut last = None;
    for _ in samples() {
        last = Some(read_frame(&mut cut));
    }
    assert!(matches!(last, Some(Err(FrameIoError::Io(_)))));
    let mut lying = std::io::Cursor::new(vec![b'E', b'M', VERSION, 6, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        read_frame(&mut lying),
        Err(FrameIoError::Protocol(ProtocolError::FrameTooLarge { .. }))
    ));
}
