//! Fuzz target: arbitrary bytes into the stateless decoder, the streaming
//! decoder (in fuzzer-chosen chunks) and the blocking reader. None may panic;
//! every accepted frame must re-encode to exactly its bytes.
#![no_main]

use ember_abi::protocol::{decode, read_frame, Decode, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Decode::Frame { message, len } = decode(data) {
        assert_eq!(message.to_frame().expect("re-encode"), &data[..len]);
    }
    let split = data.first().map_or(1, |b| usize::from(*b).max(1));
    let mut dec = FrameDecoder::new();
    for chunk in data.chunks(split) {
        dec.push(chunk);
        // Recoverable errors skip the bad frame, so this always progresses.
        loop {
            match dec.next_message() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {}
                Err(_) => break,
            }
        }
    }
    let mut cursor = std::io::Cursor::new(data);
    while read_frame(&mut cursor).is_ok() {}
});
