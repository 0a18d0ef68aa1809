//! API keys as the store last returned them, kept for `ServerConfig::key_cache_ttl`: a client
//! that sends many requests with one key costs the database one key lookup per that time, not
//! one per request (which halved the requests/s of status polls on PostgreSQL). The secret is
//! still compared on every request; what a cached entry can hide is a revocation, for at most
//! the TTL. Only keys that exist are kept, so unknown ids (guesses) cannot grow the cache;
//! they are looked up every time and charged to the client's rate limit.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use longrun_core::{ApiKey, Store, StoreError};
use uuid::Uuid;

/// Past this many entries, an insert first drops the expired ones.
const SWEEP_ABOVE: usize = 1024;

/// Keys found in the store, each with its secret's hash and when it was read.
pub struct KeyCache {
    ttl: Duration,
    found: Mutex<HashMap<Uuid, (Instant, ApiKey, String)>>,
}

impl KeyCache {
    /// A cache keeping each key for `ttl` (zero: nothing is kept).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            found: Mutex::new(HashMap::new()),
        }
    }

    /// Key `id` and its secret's hash, as [`Store::find_key`] returned them at most `ttl` ago.
    pub async fn find(
        &self,
        store: &dyn Store,
        id: Uuid,
    ) -> Result<Option<(ApiKey, String)>, StoreError> {
        if self.ttl.is_zero() {
            return store.find_key(id).await;
        }
        if let Some((read, key, hash)) = self.entries().get(&id)
            && read.elapsed() < self.ttl
        {
            return Ok(Some((key.clone(), hash.clone())));
        }
        let found = store.find_key(id).await?;
        if let Some((key, hash)) = &found {
            let mut entries = self.entries();
            if entries.len() >= SWEEP_ABOVE {
                entries.retain(|_, (read, _, _)| read.elapsed() < self.ttl);
            }
            entries.insert(id, (Instant::now(), key.clone(), hash.clone()));
        }
        Ok(found)
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Uuid, (Instant, ApiKey, String)>> {
        // Each change is one call, so the map stays consistent even if a holder panicked.
        self.found
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
