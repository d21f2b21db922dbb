//! Feed arbitrary bytes to the stream framer in arbitrary chunk sizes (the
//! first byte picks the size). It must never panic, every frame it cuts
//! must be as long as its Content-Length says, and cutting the same stream
//! in one piece must give the same frames.
#![no_main]

use bytes::BytesMut;
use sip_message::{Frame, Framer, Limits, Message};

fn frames(data: &[u8], chunk: usize) -> (Vec<Frame>, bool) {
    let limits = Limits::default();
    let mut f = Framer::new(&limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match f.next_frame(&mut buf) {
                Ok(Some(fr)) => {
                    if let Frame::Message(m) = &fr {
                        let _ = Message::parse(m.clone(), &limits);
                    }
                    out.push(fr);
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let (chunked, chunked_failed) = frames(rest, usize::from(first % 64) + 1);
    let (whole, whole_failed) = frames(rest, rest.len().max(1));
    assert_eq!(chunked_failed, whole_failed);
    assert_eq!(chunked, whole);
});
