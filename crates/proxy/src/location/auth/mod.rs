//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): challenges
//! with stateless, HMAC-signed nonces, verification of credentials against
//! stored HA1 values, and nonce-count replay protection in bounded memory.
//!
//! Nonce = base64url(timestamp(ms, u64 BE) ‖ random(16) ‖ HMAC-SHA256(secret,
//! timestamp ‖ random ‖ realm)). Any instance holding the same secret can
//! verify it; no per-challenge state is kept. A nonce with a good MAC that is
//! older than `nonce_ttl_s` is stale (`stale=true` when the response was
//! right, RFC 7616 §3.3); a nonce with a bad MAC is refused without stale.
//!
//! `qop=auth` is required: without it there is no nonce-count and so no
//! replay protection (RFC 2069 clients are refused). `-sess` algorithms and
//! `userhash` are not supported.

pub mod gate;
pub mod header;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512_256};
use sip_message::build::Response;
use sip_message::{HeaderName, Message};

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}
use header::{parse_digest, quote, DigestParams};

type HmacSha256 = Hmac<Sha256>;

/// Digest algorithms (RFC 7616 §3.2, RFC 8760 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha512_256,
}

impl Algorithm {
    /// The `algorithm` token.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }
    /// Parse an `algorithm` value (case-insensitive); `-sess` is not supported.
    pub fn parse(s: &str) -> Option<Algorithm> {
        [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }
    /// Lower-case hex of H(data).
    pub fn hex_digest(self, data: &[u8]) -> String {
        self.hex_digest_of(&[data])
    }

    /// Lower-case hex of H(the parts joined), without joining them first.
    pub fn hex_digest_of(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            hex(&h.finalize())
        }
        match self {
            Algorithm::Md5 => run::<md5::Md5>(parts),
            Algorithm::Sha256 => run::<Sha256>(parts),
            Algorithm::Sha512_256 => run::<Sha512_256>(parts),
        }
    }
}

/// Lower-case hex of `bytes`: one two-digit slice of [`HEX_PAIRS`] per
/// byte, rather than two chars pushed one by one (digests, opaque values
/// and To tags are written this way for every request).
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        let at = usize::from(b) * 2;
        s.push_str(HEX_PAIRS.get(at..at + 2).unwrap_or("00"));
    }
    s
}

/// "000102…feff": the two lower-case hex digits of every byte value.
const HEX_PAIRS: &str = match std::str::from_utf8(&hex_pairs()) {
    Ok(s) => s,
    Err(_) => "",
};

#[allow(clippy::indexing_slicing)] // k < 256, both indices < 512; evaluated at compile time
const fn hex_pairs() -> [u8; 512] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [0u8; 512];
    let mut k = 0;
    while k < 256 {
        t[2 * k] = DIGITS[k >> 4];
        t[2 * k + 1] = DIGITS[k & 0x0f];
        k += 1;
    }
    t
}

/// A fresh To tag: 16 lower-case hex digits of a random u64, as
/// `format!("{:016x}", …)` writes them, without the formatting machinery
/// (every response the registrar sends gets one).
pub fn random_tag() -> String {
    hex(&rand::random::<u64>().to_be_bytes())
}

/// Compare without an early exit, so timing does not reveal how many leading
/// bytes of a guess were right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `constant_time_eq` for a lower-case hex digest against one as sent, whose
/// hex letters may be upper-case (RFC 7616 §3.4.1 LHEX; UAs vary).
fn constant_time_eq_hex(lower: &[u8], sent: &[u8]) -> bool {
    if lower.len() != sent.len() {
        return false;
    }
    lower.iter().zip(sent).fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase())) == 0
}

/// HA1 = H(username ":" realm ":" password) per algorithm, lower-case hex, as
/// the directory stores it (DESIGN §10 `ha1 = { md5, sha256, sha512_256 }`
/// in a directory file).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ha1Set {
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub sha512_256: Option<String>,
}

impl Ha1Set {
    pub fn get(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
            Algorithm::Sha512_256 => self.sha512_256.as_deref(),
        }
    }
}

/// Hash a password for the directory (`umproxy hash-password`). The realm is
/// part of the hash: users must be hashed per realm (domain) they use.
pub fn hash_password(user: &str, realm: &str, password: &str) -> Ha1Set {
    let a1 = format!("{user}:{realm}:{password}");
    Ha1Set {
        md5: Some(Algorithm::Md5.hex_digest(a1.as_bytes())),
        sha256: Some(Algorithm::Sha256.hex_digest(a1.as_bytes())),
        sha512_256: Some(Algorithm::Sha512_256.hex_digest(a1.as_bytes())),
    }
}

/// `response` for qop=auth (RFC 7616 §3.4.1): KD(HA1, nonce:nc:cnonce:qop:H(method:uri)).
pub fn compute_response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hex_digest_of(&[method.as_bytes(), b":", uri.as_bytes()]);
    alg.hex_digest_of(&[
        ha1.as_bytes(),
        b":",
        nonce.as_bytes(),
        b":",
        nc.as_bytes(),
        b":",
        cnonce.as_bytes(),
        b":auth:",
        ha2.as_bytes(),
    ])
}

/// One challenge value, `Digest realm=…, qop="auth", algorithm=…,
/// nonce="…", opaque="…"` (then `, stale=true` when stale), appended
/// piece by piece into one allocation of the right size: every
/// unauthenticated request gets one, and `format!` cost several times as
/// much (its estimate of the length is short, so it grew twice).
fn challenge_value(quoted_realm: &str, alg: Algorithm, nonce: &str, opaque: &str, stale: bool) -> String {
    let parts = [
        "Digest realm=",
        quoted_realm,
        ", qop=\"auth\", algorithm=",
        alg.name(),
        ", nonce=\"",
        nonce,
        "\", opaque=\"",
        opaque,
        "\"",
    ];
    const STALE: &str = ", stale=true";
    let mut v = String::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + STALE.len());
    for p in parts {
        v.push_str(p);
    }
    if stale {
        v.push_str(STALE);
    }
    v
}

/// `[auth]` settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Nonce lifetime in seconds (default 300).
    pub nonce_ttl_s: u64,
    /// Algorithms offered, one challenge each, in this order (RFC 7616 §3.7:
    /// preferred first). Default SHA-256, MD5.
    pub algorithms: Vec<Algorithm>,
    /// Nonces whose nonce-count is tracked at most (default 262 144, about
    /// 10 MB; enough for ~870 new nonces/s over a 300 s lifetime before the
    /// oldest are evicted, which only makes their UAs re-authenticate).
    pub max_tracked_nonces: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            nonce_ttl_s: 300,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            max_tracked_nonces: 262_144,
        }
    }
}

/// 401 + WWW-Authenticate / Authorization (registrar, UAS) or 407 +
/// Proxy-Authenticate / Proxy-Authorization (proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    Www,
    Proxy,
}

impl ChallengeKind {
    pub fn status(self) -> u16 {
        match self {
            ChallengeKind::Www => 401,
            ChallengeKind::Proxy => 407,
        }
    }
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "WWW-Authenticate",
            ChallengeKind::Proxy => "Proxy-Authenticate",
        }
    }
    fn credentials_header(self) -> HeaderName {
        match self {
            ChallengeKind::Www => HeaderName::Authorization,
            ChallengeKind::Proxy => HeaderName::ProxyAuthorization,
        }
    }
}

/// Why authentication failed. Labels are the `reason` of
/// `umproxy_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    #[error("no credentials for the realm")]
    Missing,
    #[error("malformed credentials")]
    Malformed,
    #[error("unsupported algorithm or qop")]
    Unsupported,
    #[error("uri does not match the Request-URI")]
    UriMismatch,
    #[error("no such user, or no HA1 for the algorithm")]
    UnknownUser,
    #[error("nonce not issued by us")]
    BadNonce,
    #[error("nonce expired")]
    StaleNonce,
    #[error("nonce-count replayed")]
    Replay,
    #[error("wrong response")]
    WrongResponse,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unsupported => "unsupported",
            AuthFailure::UriMismatch => "uri_mismatch",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadNonce => "bad_nonce",
            AuthFailure::StaleNonce => "stale_nonce",
            AuthFailure::Replay => "replay",
            AuthFailure::WrongResponse => "wrong_response",
        }
    }
    /// Whether the new challenge carries `stale=true` (the UA knew the
    /// password; only the nonce must be renewed).
    pub fn is_stale(self) -> bool {
        matches!(self, AuthFailure::StaleNonce)
    }
    /// Whether this counts towards brute-force lock-out: a guess was made
    /// (wrong response, unknown user). Missing credentials and stale nonces
    /// are ordinary parts of the exchange.
    pub fn is_guess(self) -> bool {
        matches!(self, AuthFailure::WrongResponse | AuthFailure::UnknownUser | AuthFailure::Replay)
    }
}

/// Parsed digest credentials, unescaped; borrowed from the header unless a
/// value needed unescaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: Cow<'a, str>,
    pub realm: Cow<'a, str>,
    pub nonce: Cow<'a, str>,
    pub uri: Cow<'a, str>,
    /// As sent; compared case-insensitively (hex digits).
    pub response: Cow<'a, str>,
    pub algorithm: Algorithm,
    pub cnonce: Cow<'a, str>,
    /// nonce-count as sent (8 hex digits) and its value.
    pub nc_text: Cow<'a, str>,
    pub nc: u32,
    pub opaque: Option<Cow<'a, str>>,
}

impl<'a> Credentials<'a> {
    /// One pass over the parameters (the parser refused duplicates).
    fn from_params(p: DigestParams<'a>) -> Result<Credentials<'a>, AuthFailure> {
        let (mut username, mut realm, mut nonce, mut uri, mut response) = (None, None, None, None, None);
        let (mut cnonce, mut nc_text, mut opaque, mut algorithm, mut qop) = (None, None, None, None, None);
        for (name, value) in p.into_params() {
            let slot = match name.len() {
                2 if name.eq_ignore_ascii_case(b"nc") => &mut nc_text,
                3 if name.eq_ignore_ascii_case(b"uri") => &mut uri,
                3 if name.eq_ignore_ascii_case(b"qop") => &mut qop,
                5 if name.eq_ignore_ascii_case(b"realm") => &mut realm,
                5 if name.eq_ignore_ascii_case(b"nonce") => &mut nonce,
                6 if name.eq_ignore_ascii_case(b"cnonce") => &mut cnonce,
                6 if name.eq_ignore_ascii_case(b"opaque") => &mut opaque,
                8 if name.eq_ignore_ascii_case(b"username") => &mut username,
                8 if name.eq_ignore_ascii_case(b"response") => &mut response,
                8 if name.eq_ignore_ascii_case(b"userhash") => {
                    if value.eq_ignore_ascii_case("true") {
                        return Err(AuthFailure::Unsupported);
                    }
                    continue;
                }
                9 if name.eq_ignore_ascii_case(b"algorithm") => &mut algorithm,
                _ => continue,
            };
            *slot = Some(value);
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(AuthFailure::Unsupported)?,
        };
        match qop {
            Some(q) if q.eq_ignore_ascii_case("auth") => {}
            _ => return Err(AuthFailure::Unsupported),
        }
        let nc_text = nc_text.ok_or(AuthFailure::Malformed)?;
        if nc_text.len() != 8 {
            return Err(AuthFailure::Malformed);
        }
        let nc = u32::from_str_radix(&nc_text, 16).map_err(|_| AuthFailure::Malformed)?;
        let need = |v: Option<Cow<'a, str>>| v.ok_or(AuthFailure::Malformed);
        Ok(Credentials {
            username: need(username)?,
            realm: need(realm)?,
            nonce: need(nonce)?,
            uri: need(uri)?,
            response: need(response)?,
            algorithm,
            cnonce: need(cnonce)?,
            nc_text,
            nc,
            opaque,
        })
    }
}

/// Parse one credentials header value.
pub fn parse_credentials(value: &[u8]) -> Result<Credentials<'_>, AuthFailure> {
    let params = parse_digest(value).map_err(|_| AuthFailure::Malformed)?;
    Credentials::from_params(params)
}

const NONCE_RANDOM: usize = 16;
/// Realms whose `opaque` is cached at most.
const MAX_CACHED_REALMS: usize = 256;
const NONCE_MAC: usize = 32;
const NONCE_LEN: usize = 8 + NONCE_RANDOM + NONCE_MAC;

/// Highest nonce-count seen per nonce, in bounded memory.
///
/// When full, entries of expired nonces go first; if that is not enough the
/// oldest-issued eighth is evicted and `watermark` rises to their issue time.
/// A nonce issued at or before the watermark that is not tracked is treated
/// as stale, so an evicted nonce can never be replayed: the UA is simply
/// re-challenged.
struct NonceCounts {
    /// nonce's random part → (issued at, ms; highest nc). Keys are random
    /// values we minted (the MAC was checked first), so a peer cannot choose
    /// them to flood a bucket. About 40 bytes per entry.
    /// Random keys need no SipHash: the cheap id hasher.
    seen: HashMap<u128, (u64, u32), sip_transaction::IdBuildHasher>,
    watermark: u64,
    cap: usize,
}

impl NonceCounts {
    /// Record `nc` for `nonce`; `Err` on replay or evicted nonce.
    fn check_and_record(&mut self, nonce: u128, issued: u64, nc: u32, now: u64, ttl: u64) -> Result<(), AuthFailure> {
        if let Some((_, last)) = self.seen.get_mut(&nonce) {
            if nc <= *last {
                return Err(AuthFailure::Replay);
            }
            *last = nc;
            return Ok(());
        }
        if issued <= self.watermark {
            return Err(AuthFailure::StaleNonce);
        }
        if self.seen.len() >= self.cap {
            self.seen.retain(|_, (t, _)| t.saturating_add(ttl) > now);
        }
        if self.seen.len() >= self.cap {
            let mut times: Vec<u64> = self.seen.values().map(|(t, _)| *t).collect();
            times.sort_unstable();
            let cut = times.get(times.len() / 8).copied().unwrap_or(u64::MAX);
            self.seen.retain(|_, (t, _)| *t > cut);
            self.watermark = self.watermark.max(cut);
            if issued <= self.watermark {
                return Err(AuthFailure::StaleNonce);
            }
        }
        self.seen.insert(nonce, (issued, nc));
        Ok(())
    }
}

/// The digest authenticator: mints challenges and verifies credentials.
pub struct DigestAuth {
    /// HMAC keyed with the secret once; cloned per use (keying costs two
    /// hash blocks).
    keyed: HmacSha256,
    /// `opaque` per realm, computed once (realms are the served domains).
    opaques: std::sync::RwLock<HashMap<String, String>>,
    cfg: AuthConfig,
    counts: Mutex<NonceCounts>,
}

/// Why a [`DigestAuth`] cannot be built from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    #[error("auth secret must be at least 16 bytes")]
    SecretTooShort,
    #[error("auth algorithms must not be empty")]
    NoAlgorithm,
}

impl DigestAuth {
    /// `secret` signs nonces; instances sharing registrations (Redis) should
    /// share it so a nonce minted by one is accepted by another.
    pub fn new(secret: &[u8], cfg: AuthConfig) -> Result<DigestAuth, AuthConfigError> {
        if secret.len() < 16 {
            return Err(AuthConfigError::SecretTooShort);
        }
        if cfg.algorithms.is_empty() {
            return Err(AuthConfigError::NoAlgorithm);
        }
        let cap = cfg.max_tracked_nonces.max(8);
        Ok(DigestAuth {
            // HMAC accepts keys of any length; this cannot fail.
            keyed: HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac()),
            opaques: std::sync::RwLock::new(HashMap::new()),
            cfg,
            counts: Mutex::new(NonceCounts { seen: HashMap::default(), watermark: 0, cap }),
        })
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// A fresh nonce for `realm` at `now`.
    pub fn make_nonce(&self, realm: &str, now: SystemTime) -> String {
        let ts = unix_millis(now).to_be_bytes();
        let random: [u8; NONCE_RANDOM] = rand::random();
        let mut mac = self.mac();
        mac.update(&ts);
        mac.update(&random);
        mac.update(realm.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut raw = Vec::with_capacity(NONCE_LEN);
        raw.extend_from_slice(&ts);
        raw.extend_from_slice(&random);
        raw.extend_from_slice(&tag);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// Check a nonce's MAC; returns its issue time (Unix ms) and random part.
    fn verify_nonce(&self, nonce: &str, realm: &str) -> Result<(u64, u128), AuthFailure> {
        if nonce.len() > 128 {
            return Err(AuthFailure::BadNonce);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce).map_err(|_| AuthFailure::BadNonce)?;
        if raw.len() != NONCE_LEN {
            return Err(AuthFailure::BadNonce);
        }
        let (head, tag) = raw.split_at(8 + NONCE_RANDOM);
        let mut mac = self.mac();
        mac.update(head);
        mac.update(realm.as_bytes());
        mac.verify_slice(tag).map_err(|_| AuthFailure::BadNonce)?;
        let ts: [u8; 8] = head.get(..8).and_then(|s| s.try_into().ok()).ok_or(AuthFailure::BadNonce)?;
        let random: [u8; NONCE_RANDOM] = head.get(8..).and_then(|s| s.try_into().ok()).ok_or(AuthFailure::BadNonce)?;
        Ok((u64::from_be_bytes(ts), u128::from_be_bytes(random)))
    }

    /// The opaque value for `realm`: fixed per secret and realm, echoed by UAs.
    fn opaque(&self, realm: &str) -> String {
        if let Some(o) = self.opaques.read().ok().and_then(|m| m.get(realm).cloned()) {
            return o;
        }
        let mut mac = self.mac();
        mac.update(b"opaque\0");
        mac.update(realm.as_bytes());
        let tag = mac.finalize().into_bytes();
        let opaque = hex(tag.get(..12).unwrap_or_default());
        // Realms are the proxy's domains (checked before any challenge), so
        // the cache stays small; the cap is a backstop.
        if let Ok(mut m) = self.opaques.write() {
            if m.len() < MAX_CACHED_REALMS {
                m.insert(realm.to_owned(), opaque.clone());
            }
        }
        opaque
    }

    /// Challenge header values, one per configured algorithm, preferred first
    /// (RFC 7616 §3.7, RFC 8760 §2.4).
    pub fn challenges(&self, realm: &str, stale: bool, now: SystemTime) -> Vec<String> {
        let nonce = self.make_nonce(realm, now);
        let opaque = self.opaque(realm);
        let realm = quote(realm);
        self.cfg.algorithms.iter().map(|&alg| challenge_value(&realm, alg, &nonce, &opaque, stale)).collect()
    }

    /// The complete 401/407 for `req`.
    pub fn challenge_response(
        &self,
        req: &Message,
        kind: ChallengeKind,
        realm: &str,
        stale: bool,
        now: SystemTime,
    ) -> bytes::Bytes {
        let tag = random_tag();
        let code = kind.status();
        let challenges = self.challenges(realm, stale, now);
        // `Name: value\r\n` per challenge, written without a reallocation.
        let room = challenges.iter().map(|v| kind.challenge_header().len() + v.len() + 4).sum();
        let mut resp = Response::with_room(req, code, sip_message::build::reason_phrase(code), Some(&tag), room);
        for v in &challenges {
            resp = resp.header(kind.challenge_header(), v);
        }
        resp.finish()
    }

    /// The credentials in `req` for `realm` (RFC 3261 §22.4: a request may
    /// carry several, one per realm). `Missing` when there are none for it.
    pub fn credentials<'m>(req: &'m Message, kind: ChallengeKind, realm: &str) -> Result<Credentials<'m>, AuthFailure> {
        let mut malformed = false;
        for (k, v) in req.header_values(kind.credentials_header()).enumerate() {
            if k >= 8 {
                break;
            }
            match parse_credentials(v) {
                Ok(c) if c.realm == realm => return Ok(c),
                Ok(_) => {}
                Err(_) => malformed = true,
            }
        }
        Err(if malformed { AuthFailure::Malformed } else { AuthFailure::Missing })
    }

    /// Verify credentials for a request with `method` and `request_uri`,
    /// against the user's stored HA1 (`None` = unknown user).
    pub fn verify(
        &self,
        creds: &Credentials<'_>,
        realm: &str,
        method: &str,
        request_uri: &str,
        ha1: Option<&Ha1Set>,
        now: SystemTime,
    ) -> Result<(), AuthFailure> {
        if creds.realm != realm {
            return Err(AuthFailure::Missing);
        }
        let (issued, key) = self.verify_nonce(&creds.nonce, realm)?;
        if let Some(o) = &creds.opaque {
            if !constant_time_eq(o.as_bytes(), self.opaque(realm).as_bytes()) {
                return Err(AuthFailure::BadNonce);
            }
        }
        // RFC 7616 §3.4.6 / RFC 3261 §22.4: the digest-uri must be the Request-URI.
        if creds.uri != request_uri {
            return Err(AuthFailure::UriMismatch);
        }
        let ha1 = ha1.and_then(|h| h.get(creds.algorithm)).ok_or(AuthFailure::UnknownUser)?;
        let expected =
            compute_response(creds.algorithm, ha1, &creds.nonce, &creds.nc_text, &creds.cnonce, method, &creds.uri);
        if !constant_time_eq_hex(expected.as_bytes(), creds.response.as_bytes()) {
            return Err(AuthFailure::WrongResponse);
        }
        let now_ms = unix_millis(now);
        let ttl_ms = self.cfg.nonce_ttl_s.saturating_mul(1000);
        if issued.saturating_add(ttl_ms) <= now_ms {
            return Err(AuthFailure::StaleNonce);
        }
        let mut counts = self.counts.lock().map_err(|_| AuthFailure::StaleNonce)?;
        counts.check_and_record(key, issued, creds.nc, now_ms, ttl_ms)
    }

    /// Nonces whose nonce-count is currently tracked.
    pub fn tracked_nonces(&self) -> usize {
        self.counts.lock().map(|c| c.seen.len()).unwrap_or(0)
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> HmacSha256 {
    panic!("HMAC-SHA256 takes keys of any length")
}

#[cfg(test)]
mod tests;
