//! Password work: bcrypt hashes and checks, bounded and off the async workers, and the cache
//! of verified passwords. The catalog that holds the hashes is [`crate::users`]; the request
//! checks that call this are [`crate::auth`].
//!
//! Cost, and who may spend it: bcrypt (cost 10) takes tens of milliseconds, so after a
//! successful check the [`Authenticator`] remembers a salted SHA-256 of the password per user
//! (influxd's scheme) and later requests compare against it in constant time; an entry holds
//! the bcrypt hash it was verified against, so one made stale by `SET PASSWORD` or `DROP
//! USER` (which also drop it) is never used. bcrypt runs on blocking threads, never on the
//! async workers, at most one per two cores at a time, and at most [`MAX_WAITING`] checks wait
//! for one: past that a request is refused at once (503) instead of queueing, so callers
//! without a valid password can occupy at most those threads, never the whole machine.
//!
//! What it is not: it knows no users or privileges, only names, hashes and passwords.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// bcrypt's cost for new passwords (influxd's `bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;

/// Password checks that may wait for a bcrypt thread before new ones are refused.
pub const MAX_WAITING: usize = 32;

/// Why a password could not be checked or hashed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("authentication is busy: too many password checks in progress, retry later")]
    Busy,
    #[error("cannot hash the password: {0}")]
    Hash(#[source] Arc<bcrypt::BcryptError>),
    /// The blocking task running bcrypt panicked or was cancelled.
    #[error("cannot hash the password: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
}

/// A password known good for a user: SHA-256 of a random salt and the password, and the bcrypt
/// hash it was checked against.
struct Verified {
    salt: [u8; 16],
    digest: [u8; 32],
    hash: String,
}

fn salted(salt: &[u8], password: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize()
        .into()
}

/// bcrypt off the async workers, bounded, plus the cache of verified passwords.
pub struct Authenticator {
    cache: Mutex<HashMap<String, Verified>>,
    running: tokio::sync::Semaphore,
    waiting: AtomicUsize,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    pub fn new() -> Authenticator {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Authenticator {
            cache: Mutex::new(HashMap::new()),
            running: tokio::sync::Semaphore::new((cores / 2).max(1)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Runs `f` (a bcrypt computation) on a blocking thread once a slot is free; refuses when
    /// too many are waiting already.
    async fn bcrypt<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AuthError::Busy);
        }
        let permit = self.running.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| AuthError::Busy)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuthError::Task(Arc::new(e)))
    }

    /// A new bcrypt hash of `password`.
    pub(crate) async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let password = password.to_string();
        self.bcrypt(move || bcrypt::hash(password, BCRYPT_COST))
            .await?
            .map_err(|e| AuthError::Hash(Arc::new(e)))
    }

    /// Whether `password` matches the bcrypt `hash` (no cache; a damaged hash matches nothing).
    pub(crate) async fn check_hash(&self, password: &str, hash: &str) -> Result<bool, AuthError> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.bcrypt(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
    }

    /// Whether `password` is `user`'s, whose stored bcrypt hash is `hash`: from the cache when
    /// it was verified before, else by bcrypt (and then remembered).
    pub(crate) async fn verify(
        &self,
        user: &str,
        hash: &str,
        password: &str,
    ) -> Result<bool, AuthError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = cache.get(user).filter(|v| v.hash == hash)
                && bool::from(salted(&v.salt, password).ct_eq(&v.digest))
            {
                return Ok(true);
            }
        }
        if !self.check_hash(password, hash).await? {
            return Ok(false);
        }
        let mut salt = [0u8; 16];
        if getrandom::fill(&mut salt).is_ok() {
            let v = Verified {
                salt,
                digest: salted(&salt, password),
                hash: hash.to_string(),
            };
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user.to_string(), v);
        }
        Ok(true)
    }

    /// Drops `user`'s verified password (after `SET PASSWORD` or `DROP USER`).
    pub(crate) fn forget(&self, user: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cache_answers_for_a_verified_password_only() {
        let a = Authenticator::new();
        let hash = bcrypt::hash("pw", 4).unwrap();
        assert!(!a.verify("bob", &hash, "bad").await.unwrap());
        assert!(a.cache.lock().unwrap().is_empty());
        assert!(a.verify("bob", &hash, "pw").await.unwrap());
        assert!(a.cache.lock().unwrap().contains_key("bob"));
        // A wrong password still fails with an entry present; a new hash ignores the entry.
        assert!(!a.verify("bob", &hash, "bad").await.unwrap());
        let other = bcrypt::hash("new", 4).unwrap();
        assert!(!a.verify("bob", &other, "pw").await.unwrap());
        a.forget("bob");
        assert!(a.cache.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn bcrypt_checks_beyond_the_queue_are_refused() {
        let a = std::sync::Arc::new(Authenticator::new());
        // Hold every running slot, fill the queue, then one more is refused at once.
        let slots = a.running.available_permits();
        let held = a.running.acquire_many(slots as u32).await.unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let mut queued = Vec::new();
        for _ in 0..MAX_WAITING {
            let (a, hash) = (a.clone(), hash.clone());
            queued.push(tokio::spawn(async move { a.check_hash("pw", &hash).await }));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while a.waiting.load(Ordering::Acquire) < MAX_WAITING {
            assert!(std::time::Instant::now() < deadline, "checks did not queue");
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            a.check_hash("pw", &hash).await,
            Err(AuthError::Busy)
        ));
        drop(held);
        for q in queued {
            assert!(q.await.unwrap().unwrap());
        }
    }
}
