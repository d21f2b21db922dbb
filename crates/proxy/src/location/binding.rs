//! A registration binding (RFC 3261 §10.3) and its compact, bounds-checked
//! byte encoding shared by the embedded and the Redis stores.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The flow a REGISTER arrived on (RFC 5626 §5.2), as the transport layer
/// names it. The core mints it (its connection table id); this module only
/// stores it. With a shared (Redis) store a token is meaningful only to the
/// instance that minted it, so the core should fold its instance identity
/// into the number or compare `received` as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowToken(pub u64);

impl FlowToken {
    /// The flow of a NAT'd UDP binding: no connection, the binding's
    /// `received` address is where it is reached ([`crate::nat`]).
    pub const UDP_SOURCE: FlowToken = FlowToken(0);
}

/// A q-value in thousandths (RFC 3261 §20.10: `qvalue = ("0" [ "." 0*3DIGIT ]) / ("1" [ "." 0*3("0") ])`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QValue(u16);

impl QValue {
    /// The q of a contact that gives none (RFC 3261 §10.2.1.2 leaves it to the
    /// registrar; 1.0 is what UAs expect).
    pub const DEFAULT: QValue = QValue(1000);

    /// Parse `qvalue`; `None` for anything the grammar does not allow.
    pub fn parse(s: &str) -> Option<QValue> {
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut thousandths: u16 = 0;
        for (k, b) in frac.bytes().chain(std::iter::repeat(b'0')).take(3).enumerate() {
            let digit = u16::from(b - b'0');
            thousandths += digit * [100, 10, 1].get(k).copied().unwrap_or(0);
        }
        match int {
            "0" => Some(QValue(thousandths)),
            "1" if thousandths == 0 => Some(QValue(1000)),
            _ => None,
        }
    }
    pub fn from_thousandths(v: u16) -> Option<QValue> {
        (v <= 1000).then_some(QValue(v))
    }
    pub fn thousandths(self) -> u16 {
        self.0
    }
}

impl std::fmt::Display for QValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= 1000 {
            f.write_str("1.0")
        } else {
            let digits = format!("{:03}", self.0);
            let digits = digits.trim_end_matches('0');
            write!(f, "0.{}", if digits.is_empty() { "0" } else { digits })
        }
    }
}

/// One contact bound to an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Canonical AOR (`sip:user@host`, host lower-cased).
    pub aor: String,
    /// The Contact URI as the UA wrote it (without angle brackets).
    pub contact_uri: String,
    pub q: QValue,
    /// Unix seconds at which the binding lapses.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Path header values of the REGISTER, top first (RFC 3327).
    pub path: Vec<String>,
    /// `+sip.instance` value without its quotes (RFC 5626 §4.1).
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626 §4.2); only kept together with `instance`.
    pub reg_id: Option<u32>,
    /// The flow the REGISTER arrived on, for outbound bindings.
    pub flow: Option<FlowToken>,
    /// Source address the REGISTER came from.
    pub received: Option<SocketAddr>,
    /// Unix seconds of the last REGISTER that created or refreshed it; the
    /// oldest one is dropped first when an AOR is full.
    pub updated_at: u64,
}

impl Binding {
    /// Seconds left at `now` (0 when lapsed).
    pub fn remaining(&self, now: SystemTime) -> u64 {
        self.expires_at.saturating_sub(unix_secs(now))
    }
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at <= unix_secs(now)
    }
    /// Whether this is an RFC 5626 outbound binding (instance and reg-id).
    pub fn is_outbound(&self) -> bool {
        self.instance.is_some() && self.reg_id.is_some()
    }
}

/// Whole seconds since the Unix epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `SystemTime` of a Unix second count.
pub fn from_unix_secs(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

/// The bindings of one AOR with the version that guards its replacement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AorBindings {
    /// 0 when the AOR has no record; bumped by every replacement.
    pub version: u64,
    pub bindings: Vec<Binding>,
}

impl AorBindings {
    /// The latest expiry among the bindings (Unix seconds), 0 when empty.
    pub fn latest_expiry(&self) -> u64 {
        self.bindings.iter().map(|b| b.expires_at).max().unwrap_or(0)
    }
}

// ---- encoding -------------------------------------------------------------
//
// record  = FORMAT(u8) version(u64) count(u16) *binding
// binding = aor contact(str) q(u16) expires_at(u64) call_id(str) cseq(u32)
//           npath(u8) *str  instance(opt str) reg_id(opt u32) flow(opt u64)
//           received(opt addr) updated_at(u64)
// str     = len(u16) bytes (UTF-8)
// All integers big-endian. Decoding checks every length against the input.

const FORMAT: u8 = 1;

/// Upper bounds for decoding, so a corrupt or hostile stored value cannot make
/// us allocate without limit.
const MAX_DECODED_BINDINGS: usize = 1024;
const MAX_DECODED_PATH: usize = 64;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings longer than u16::MAX never reach here: the registrar bounds them.
    let bytes = s.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or_default());
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        Some(v) => {
            out.push(1);
            put(out, v);
        }
        None => out.push(0),
    }
}

/// Encode an AOR record.
pub fn encode_record(rec: &AorBindings) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + rec.bindings.len() * 160);
    encode_record_into(rec, &mut out);
    out
}

/// Encode an AOR record at the end of `out` (the journal's batch buffer).
pub fn encode_record_into(rec: &AorBindings, out: &mut Vec<u8>) {
    out.push(FORMAT);
    out.extend_from_slice(&rec.version.to_be_bytes());
    let count = u16::try_from(rec.bindings.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for b in rec.bindings.iter().take(usize::from(count)) {
        put_str(out, &b.aor);
        put_str(out, &b.contact_uri);
        out.extend_from_slice(&b.q.0.to_be_bytes());
        out.extend_from_slice(&b.expires_at.to_be_bytes());
        put_str(out, &b.call_id);
        out.extend_from_slice(&b.cseq.to_be_bytes());
        let npath = u8::try_from(b.path.len()).unwrap_or(u8::MAX);
        out.push(npath);
        for p in b.path.iter().take(usize::from(npath)) {
            put_str(out, p);
        }
        put_opt(out, b.instance.as_deref(), put_str);
        put_opt(out, b.reg_id, |o, v| o.extend_from_slice(&v.to_be_bytes()));
        put_opt(out, b.flow, |o, v| o.extend_from_slice(&v.0.to_be_bytes()));
        put_opt(out, b.received, |o, a| {
            match a.ip() {
                IpAddr::V4(ip) => {
                    o.push(4);
                    o.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    o.push(6);
                    o.extend_from_slice(&ip.octets());
                }
            }
            o.extend_from_slice(&a.port().to_be_bytes());
        });
        out.extend_from_slice(&b.updated_at.to_be_bytes());
    }
}

/// A bounds-checked reader over stored bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
    fn str(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => f(self).map(Some),
            _ => None,
        }
    }
    fn addr(&mut self) -> Option<SocketAddr> {
        let ip = match self.u8()? {
            4 => IpAddr::from(self.array::<4>()?),
            6 => IpAddr::from(self.array::<16>()?),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.u16()?))
    }
}

/// Decode an AOR record; `None` if the bytes are not one we wrote.
pub fn decode_record(bytes: &[u8]) -> Option<AorBindings> {
    let mut r = Reader { rest: bytes };
    if r.u8()? != FORMAT {
        return None;
    }
    let version = r.u64()?;
    let count = usize::from(r.u16()?);
    if count > MAX_DECODED_BINDINGS {
        return None;
    }
    let mut bindings = Vec::with_capacity(count);
    for _ in 0..count {
        let aor = r.str()?;
        let contact_uri = r.str()?;
        let q = QValue::from_thousandths(r.u16()?)?;
        let expires_at = r.u64()?;
        let call_id = r.str()?;
        let cseq = r.u32()?;
        let npath = usize::from(r.u8()?);
        if npath > MAX_DECODED_PATH {
            return None;
        }
        let mut path = Vec::with_capacity(npath);
        for _ in 0..npath {
            path.push(r.str()?);
        }
        let instance = r.opt(Reader::str)?;
        let reg_id = r.opt(Reader::u32)?;
        let flow = r.opt(|r| r.u64().map(FlowToken))?;
        let received = r.opt(Reader::addr)?;
        let updated_at = r.u64()?;
        bindings.push(Binding {
            aor,
            contact_uri,
            q,
            expires_at,
            call_id,
            cseq,
            path,
            instance,
            reg_id,
            flow,
            received,
            updated_at,
        });
    }
    r.rest.is_empty().then_some(AorBindings { version, bindings })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(aor: &str, n: u32) -> Binding {
        Binding {
            aor: aor.to_owned(),
            contact_uri: format!("sip:{n}@192.0.2.{}:5060;transport=tcp", n % 250),
            q: QValue::parse("0.5").unwrap(),
            expires_at: 1_000 + u64::from(n),
            call_id: format!("call-{n}"),
            cseq: n,
            path: vec!["<sip:edge.example.net;lr>".into()],
            instance: Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>".into()),
            reg_id: Some(1),
            flow: Some(FlowToken(42)),
            received: Some("[2001:db8::1]:5060".parse().unwrap()),
            updated_at: 7,
        }
    }

    #[test]
    fn record_round_trips() {
        let rec = AorBindings { version: 9, bindings: vec![sample("sip:a@x", 1), sample("sip:a@x", 2)] };
        let bytes = encode_record(&rec);
        assert_eq!(decode_record(&bytes), Some(rec));
    }

    #[test]
    fn truncated_or_trailing_bytes_are_refused() {
        let rec = AorBindings { version: 1, bindings: vec![sample("sip:a@x", 1)] };
        let bytes = encode_record(&rec);
        for cut in 0..bytes.len() {
            assert_eq!(decode_record(bytes.get(..cut).unwrap()), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_record(&longer), None);
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(QValue::parse("1").map(QValue::thousandths), Some(1000));
        assert_eq!(QValue::parse("1.000").map(QValue::thousandths), Some(1000));
        assert_eq!(QValue::parse("0.7").map(QValue::thousandths), Some(700));
        assert_eq!(QValue::parse("0.075").map(QValue::thousandths), Some(75));
        assert_eq!(QValue::parse("0").map(QValue::thousandths), Some(0));
        for bad in ["1.5", "2", "0.1234", "-0", "", ".5", "0.x", "1.001"] {
            assert_eq!(QValue::parse(bad), None, "{bad}");
        }
        assert_eq!(QValue::parse("0.5").unwrap().to_string(), "0.5");
        assert_eq!(QValue::parse("0.075").unwrap().to_string(), "0.075");
        assert_eq!(QValue::parse("0").unwrap().to_string(), "0.0");
        assert_eq!(QValue::DEFAULT.to_string(), "1.0");
    }
}
