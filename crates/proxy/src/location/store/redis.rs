//! The Redis location store, shared by several umproxy instances.
//!
//! Layout: one hash per AOR at `<prefix><aor>` with fields `v` (the version,
//! decimal) and `b` (the bindings, [`encode_record`]). A replacement is one
//! Lua script that checks `v` and writes both fields atomically, then sets
//! the key's TTL (PEXPIRE) to the latest binding expiry, so Redis drops an
//! AOR whose bindings all lapsed without any sweep; single lapsed bindings
//! are filtered on read and dropped at the next write.
//!
//! The number of AORs is capped (`max_aors`, shared by every instance on
//! the Redis): a sorted set at `<prefix>#aors` scores each AOR key with its
//! expiry. A write that would create an AOR first drops the entries whose
//! time has passed, then refuses when the set is full
//! ([`StoreError::Full`], answered 503). Refreshes and removals never grow
//! it, so it holds at most `max_aors` entries. (An AOR is `sip:…`, so the
//! set's key cannot be one.)
//!
//! Failure policy: every operation is bounded. Each attempt has a response
//! timeout (and the connection a connect timeout); a failed attempt is
//! retried `attempts - 1` times after a short pause; then the caller gets
//! [`StoreError::Unavailable`] and answers 503. Never a hang. The connection
//! manager reconnects in the background, so the store works again as soon
//! as Redis is back.

use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{LocationStore, StoreError, StoreFuture};
use crate::location::binding::{decode_record, encode_record, unix_secs, AorBindings, Binding};

const STORE: &str = "redis";

/// `[registrar]` settings for the Redis store.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db` (`redis_url`).
    pub url: String,
    /// Key prefix, so several deployments can share one Redis (default `umproxy:loc:`).
    pub key_prefix: String,
    /// TCP connect timeout (default 500 ms).
    pub connect_timeout: Duration,
    /// Time an attempt may wait for its answer (default 500 ms).
    pub response_timeout: Duration,
    /// Attempts per operation (default 2).
    pub attempts: u32,
    /// Pause between attempts (default 50 ms).
    pub retry_pause: Duration,
    /// AORs held at most across all instances (default 100 000, as the
    /// embedded store).
    pub max_aors: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            key_prefix: "umproxy:loc:".into(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            attempts: 2,
            retry_pause: Duration::from_millis(50),
            max_aors: 100_000,
        }
    }
}

/// KEYS[1] = AOR key, KEYS[2] = the AOR index; ARGV = expected version,
/// TTL in ms, encoded bindings (empty = delete), now in Unix ms, the AOR
/// cap. Returns the new version, -1 when `v` moved on, -2 when a new AOR
/// would pass the cap.
const REPLACE_LUA: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then v = '0' end
if v ~= ARGV[1] then return -1 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return 0
end
local now = tonumber(ARGV[4])
if v == '0' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return -2 end
end
local nv = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'v', string.format('%d', nv), 'b', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
return nv
";

/// Full when the script says -2.
const SCRIPT_FULL: i64 = -2;

/// Redis-backed location store. Cheap to clone (the connection is shared).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    cfg: RedisConfig,
    replace_script: Script,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable { store: STORE, reason: e.to_string() }
}

impl RedisStore {
    /// Create the store. Connecting is lazy: this does not fail when Redis is
    /// down at start; operations return `Unavailable` until it is up. Must be
    /// called inside a tokio runtime.
    pub fn new(cfg: RedisConfig) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(unavailable)?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, mgr_cfg).map_err(unavailable)?;
        Ok(RedisStore { conn, cfg, replace_script: Script::new(REPLACE_LUA) })
    }

    fn key(&self, aor: &str) -> String {
        format!("{}{aor}", self.cfg.key_prefix)
    }

    /// The sorted set of AOR keys by expiry (see the module doc).
    fn index_key(&self) -> String {
        format!("{}#aors", self.cfg.key_prefix)
    }

    /// Run `op` with a timeout per attempt and bounded retries.
    async fn bounded<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempts = self.cfg.attempts.max(1);
        // The connect timeout matters when the attempt has to reconnect.
        let limit = self.cfg.response_timeout + self.cfg.connect_timeout;
        let mut last = String::new();
        for k in 0..attempts {
            if k > 0 {
                tokio::time::sleep(self.cfg.retry_pause).await;
            }
            match tokio::time::timeout(limit, op(self.conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        Err(unavailable(last))
    }
}

impl LocationStore for RedisStore {
    fn name(&self) -> &'static str {
        STORE
    }

    fn get<'a>(&'a self, aor: &'a str, now: SystemTime) -> StoreFuture<'a, AorBindings> {
        Box::pin(async move {
            let key = self.key(aor);
            let (v, b): (Option<String>, Option<Vec<u8>>) = self
                .bounded(|mut c| {
                    let key = key.clone();
                    async move { redis::cmd("HMGET").arg(&key).arg("v").arg("b").query_async(&mut c).await }
                })
                .await?;
            let (Some(v), Some(b)) = (v, b) else { return Ok(AorBindings::default()) };
            let version = v.parse::<u64>().map_err(|_| StoreError::Corrupt(format!("version of {aor}")))?;
            let mut rec = decode_record(&b).ok_or_else(|| StoreError::Corrupt(format!("bindings of {aor}")))?;
            rec.version = version;
            rec.bindings.retain(|b| !b.is_expired(now));
            Ok(rec)
        })
    }

    fn list_aors(&self, limit: usize) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let index = self.index_key();
            let stop = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
            let keys: Vec<String> = self
                .bounded(|mut c| {
                    let index = index.clone();
                    async move { redis::cmd("ZRANGE").arg(&index).arg(0).arg(stop).query_async(&mut c).await }
                })
                .await?;
            let prefix = &self.cfg.key_prefix;
            Ok(keys.into_iter().filter_map(|k| k.strip_prefix(prefix.as_str()).map(str::to_owned)).collect())
        })
    }

    fn replace<'a>(
        &'a self,
        aor: &'a str,
        expected: u64,
        bindings: Vec<Binding>,
        now: SystemTime,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let key = self.key(aor);
            let rec = AorBindings { version: 0, bindings };
            let ttl_ms = rec.latest_expiry().saturating_sub(unix_secs(now)).max(1).saturating_mul(1000);
            let blob = if rec.bindings.is_empty() { Vec::new() } else { encode_record(&rec) };
            let expected = expected.to_string();
            let index = self.index_key();
            let now_ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let got: i64 = self
                .bounded(|mut c| {
                    let mut inv = self.replace_script.prepare_invoke();
                    inv.key(&key)
                        .key(&index)
                        .arg(&expected)
                        .arg(ttl_ms)
                        .arg(blob.as_slice())
                        .arg(now_ms.to_string())
                        .arg(self.cfg.max_aors);
                    async move { inv.invoke_async(&mut c).await }
                })
                .await?;
            match got {
                SCRIPT_FULL => Err(StoreError::Full { limit: "max_aors" }),
                v => u64::try_from(v).map_err(|_| StoreError::Conflict),
            }
        })
    }

    fn remove<'a>(&'a self, aor: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (key, index) = (self.key(aor), self.index_key());
            self.bounded(|mut c| {
                let mut pipe = redis::pipe();
                pipe.atomic().del(&key).ignore().zrem(&index, &key).ignore();
                async move { pipe.query_async::<()>(&mut c).await }
            })
            .await
        })
    }

    /// Redis expires whole AORs by TTL and lapsed bindings are filtered on
    /// read, so there is nothing to sweep.
    fn expire(&self, _now: SystemTime) -> StoreFuture<'_, usize> {
        Box::pin(async { Ok(0) })
    }

    fn binding_count(&self) -> Option<usize> {
        None
    }
}
