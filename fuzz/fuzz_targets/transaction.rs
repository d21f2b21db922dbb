//! Drive the transaction layer with arbitrary bytes as messages, arbitrary
//! core commands and arbitrary time steps. It must never panic; once the
//! core has answered and cancelled everything, every transaction must end
//! within the longest RFC timer (plus one step of the clean-up timers' grid).
//!
//! Input: a sequence of records `op:u8` followed by the op's operands.
//! Messages are `len:u16 LE` + that many bytes (parsed with the default
//! limits; unparsable ones are dropped as a transport would).
#![no_main]

use bytes::Bytes;
use sip_message::{Limits, Message, Method};
use sip_transaction::{ClientId, Config, Event, ServerId, TransactionLayer, TxId};
use std::time::{Duration, Instant};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn message(&mut self) -> Option<Option<Message>> {
        let b = self.bytes()?;
        Some(Message::parse(Bytes::copy_from_slice(b), &Limits::default()).ok())
    }
}

fn pick<T: Copy>(v: &[T], i: u8) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        v.get(usize::from(i) % v.len()).copied()
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    let mut layer: TransactionLayer<u8> = TransactionLayer::new(config.clone());
    let base = Instant::now();
    let mut now = base;
    let mut servers: Vec<(ServerId, bool)> = Vec::new(); // (id, is INVITE)
    let mut clients: Vec<ClientId> = Vec::new();
    let mut input = Input(data);

    let drain = |layer: &mut TransactionLayer<u8>, servers: &mut Vec<(ServerId, bool)>| {
        while layer.poll_transmit().is_some() {}
        while let Some(e) = layer.poll_event() {
            match e {
                Event::Request { id, msg, .. } => servers.push((id, msg.method() == Some(Method::Invite))),
                Event::Cancel { cancel, .. } => servers.push((cancel, false)),
                _ => {}
            }
        }
    };

    while let Some(op) = input.u8() {
        match op % 8 {
            0 | 1 => {
                let reliable = op & 0x80 != 0;
                let Some(m) = input.message() else { break };
                if let Some(m) = m {
                    let _ = layer.handle_request(now, m, op, reliable);
                }
            }
            2 => {
                let Some(m) = input.message() else { break };
                if let Some(m) = m {
                    layer.handle_response(now, m);
                }
            }
            3 => {
                let Some(m) = input.message() else { break };
                if let Some(m) = m {
                    if let Ok(id) = layer.send_request(now, m, 0, op & 0x80 != 0) {
                        clients.push(id);
                    }
                }
            }
            4 => {
                let (Some(i), Some(status), Some(body)) = (input.u8(), input.u16(), input.bytes()) else { break };
                if let Some((id, _)) = pick(&servers, i) {
                    let _ = layer.send_response(now, id, Bytes::copy_from_slice(body), status);
                }
            }
            5 => {
                let Some(i) = input.u8() else { break };
                if let Some(id) = pick(&clients, i) {
                    let _ = layer.cancel(now, id);
                }
            }
            6 => {
                let Some(i) = input.u8() else { break };
                let id = if i & 1 == 0 {
                    pick(&servers, i >> 1).map(|(id, _)| TxId::Server(id))
                } else {
                    pick(&clients, i >> 1).map(TxId::Client)
                };
                if let Some(id) = id {
                    layer.handle_transport_error(now, id);
                }
            }
            _ => {
                // Time moves forward by up to ~65 s, firing each deadline
                // at its own instant or all at once.
                let Some(step) = input.u16() else { break };
                let target = now + Duration::from_millis(u64::from(step));
                if op & 0x80 != 0 {
                    while let Some(at) = layer.poll_timeout().filter(|&at| at <= target) {
                        now = now.max(at);
                        layer.handle_timeout(now);
                    }
                }
                now = target;
                layer.handle_timeout(now);
            }
        }
        drain(&mut layer, &mut servers);
    }

    // The core answers every request and cancels every INVITE it sent.
    for &(id, is_invite) in &servers {
        let code = if is_invite { 486 } else { 200 };
        let _ = layer.send_response(now, id, Bytes::from_static(b"SIP/2.0 ...\r\n\r\n"), code);
    }
    for &id in &clients {
        let _ = layer.cancel(now, id);
    }
    drain(&mut layer, &mut servers);
    // The longest timer, plus the step clean-up timers may be rounded up by.
    let longest = (config.t1 * 64).max(Duration::from_secs(32)).max(config.t4) + sip_transaction::timers::CLEANUP_GRID;
    let end = now + longest;
    while let Some(at) = layer.poll_timeout().filter(|&at| at <= end) {
        layer.handle_timeout(at.max(now));
        drain(&mut layer, &mut servers);
    }
    assert!(layer.is_empty(), "{} transactions outlived the longest timer", layer.len());
    assert_eq!(layer.finishing(), 0, "the finishing count outlived its transactions");
    assert!(layer.poll_timeout().is_none());
});
