//! Password hashing with bcrypt (etcd's choice, cost 10 by default: ~50 ms
//! of one core per hash or check, by design).
//!
//! The work runs on tokio's blocking threads, never on the async runtime's,
//! and at most `permits` hashes run at once; at most [`MAX_WAITING`] more
//! wait for a turn, and further callers are told `too many requests` at
//! once. So unauthenticated callers sending Authenticate in a loop cannot
//! take more than `permits` cores, nor queue unbounded work.
//!
//! Passwords longer than bcrypt's 72 bytes are refused rather than checked
//! by their first 72 bytes (etcd 3.4 hashed the first 72 and ignored the
//! rest).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OnceCell, Semaphore};

use crate::error::EtcdError;

/// etcd's `--bcrypt-cost` default.
pub const DEFAULT_COST: u32 = 10;

/// Callers that may wait for a turn beyond those hashing.
pub const MAX_WAITING: usize = 64;

/// bcrypt's input limit.
const MAX_PASSWORD_BYTES: usize = 72;

/// Hashes and checks passwords, a bounded number at a time.
pub struct Passwords {
    cost: u32,
    permits: Semaphore,
    /// The semaphore's size.
    turns: usize,
    waiting: AtomicUsize,
    /// A hash to check against when the user does not exist, so that
    /// answering takes as long as for a wrong password.
    decoy: OnceCell<String>,
}

/// Counts a caller waiting for (or holding) a turn.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn hash_err(e: impl std::fmt::Display) -> EtcdError {
    EtcdError::AuthInternal(e.to_string())
}

impl Passwords {
    /// `cost` is bcrypt's (4 to 31); `permits` the most hashes at once.
    pub fn new(cost: u32, permits: usize) -> Arc<Passwords> {
        Arc::new(Passwords {
            cost,
            permits: Semaphore::new(permits.max(1)),
            turns: permits.max(1),
            waiting: AtomicUsize::new(0),
            decoy: OnceCell::new(),
        })
    }

    /// Runs `f` on a blocking thread once a turn is free.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, EtcdError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.turns + MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(EtcdError::TooManyRequests);
        }
        let _waiting = Waiting(&self.waiting);
        let _permit = self.permits.acquire().await.map_err(hash_err)?;
        tokio::task::spawn_blocking(f).await.map_err(hash_err)
    }

    /// The bcrypt hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, EtcdError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(EtcdError::PasswordTooLong(password.len()));
        }
        let cost = self.cost;
        self.run(move || bcrypt::hash(password, cost))
            .await?
            .map_err(hash_err)
    }

    /// Whether `password` matches `hash`; `None` (no such user) checks
    /// against a decoy, and is never a match.
    pub async fn verify(&self, password: String, hash: Option<Vec<u8>>) -> Result<bool, EtcdError> {
        let (hash, real) = match hash {
            Some(h) => (String::from_utf8_lossy(&h).into_owned(), true),
            None => (self.decoy().await?, false),
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        // A stored hash that bcrypt cannot read matches nothing.
        let ok = self
            .run(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await?;
        Ok(ok && real)
    }

    async fn decoy(&self) -> Result<String, EtcdError> {
        self.decoy
            .get_or_try_init(|| async {
                let mut random = [0u8; 16];
                getrandom::fill(&mut random).map_err(hash_err)?;
                let cost = self.cost;
                self.run(move || bcrypt::hash(random, cost))
                    .await?
                    .map_err(hash_err)
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_check_their_password_only() {
        let p = Passwords::new(4, 2);
        let h = p.hash("s3cret".into()).await.expect("hash");
        assert!(h.starts_with("$2"), "{h}");
        assert!(
            p.verify("s3cret".into(), Some(h.clone().into_bytes()))
                .await
                .expect("verify")
        );
        assert!(
            !p.verify("s3cret ".into(), Some(h.clone().into_bytes()))
                .await
                .expect("verify")
        );
        assert!(
            !p.verify("".into(), Some(h.into_bytes()))
                .await
                .expect("verify")
        );
        assert!(
            !p.verify("s3cret".into(), None).await.expect("verify"),
            "no user"
        );
        assert!(
            !p.verify("x".into(), Some(b"not a hash".to_vec()))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn long_passwords_are_refused_not_truncated() {
        let p = Passwords::new(4, 1);
        let long = "x".repeat(73);
        assert_eq!(p.hash(long).await, Err(EtcdError::PasswordTooLong(73)));
        assert!(p.hash("x".repeat(72)).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_past_the_bound_are_turned_away() {
        let p = Passwords::new(12, 1);
        let mut tasks = Vec::new();
        for _ in 0..(MAX_WAITING + 8) {
            let p = p.clone();
            tasks.push(tokio::spawn(async move { p.hash("pw".into()).await }));
        }
        // Wait until the queue is full, then one more is refused at once.
        while p.waiting.load(Ordering::Acquire) < p.turns + MAX_WAITING {
            tokio::task::yield_now().await;
        }
        assert_eq!(p.hash("pw".into()).await, Err(EtcdError::TooManyRequests));
        for t in tasks {
            t.abort();
        }
    }
}
