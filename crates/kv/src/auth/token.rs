//! etcd's "simple" tokens: Authenticate hands out a random token naming a
//! user; the client sends it in the `token` gRPC metadata of later calls.
//! A token is valid for a TTL (etcd's `--auth-token-ttl`, 300 s by default)
//! from its last use: every call that presents it renews it, as etcd does.
//!
//! A token reads `<secret>.<id>`: `secret` is 32 letters from the OS's
//! CSPRNG (`getrandom`; ~182 bits), `id` a counter that finds the entry. The
//! secret is compared in constant time (`subtle`), so the time a lookup takes
//! says nothing about how much of a guess was right. (etcd's are 16 letters
//! and the raft index; clients treat tokens as opaque.)
//!
//! In memory only, like etcd's: a restart logs everyone out, and clients
//! authenticate again when told `invalid auth token`. A user's tokens are
//! dropped when it is deleted or its password changes, and all of them when
//! auth is disabled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

const LETTERS: &[u8; 52] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const SECRET_LEN: usize = 32;

/// etcd's `--auth-token-ttl` default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

struct Entry {
    secret: [u8; SECRET_LEN],
    user: Arc<str>,
    expires: Instant,
}

struct Table {
    by_id: HashMap<u64, Entry>,
    next_id: u64,
    last_sweep: Instant,
}

/// The tokens handed out; cheap to share behind an `Arc`.
pub struct Tokens {
    table: Mutex<Table>,
    ttl: Duration,
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("the OS random source failed: {0}")]
pub struct RandomError(getrandom::Error);

/// `N` letters chosen uniformly from the OS's CSPRNG.
fn random_letters<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    let mut filled = 0;
    let mut buf = [0u8; 64];
    while filled < N {
        getrandom::fill(&mut buf).map_err(RandomError)?;
        // 208 = 4 × 52: bytes above it are dropped so every letter is
        // equally likely.
        for &b in buf.iter().filter(|&&b| b < 208) {
            if filled == N {
                break;
            }
            out[filled] = LETTERS[usize::from(b % 52)];
            filled += 1;
        }
    }
    Ok(out)
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            table: Mutex::new(Table {
                by_id: HashMap::new(),
                next_id: 1,
                last_sweep: Instant::now(),
            }),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token for `user`, valid for the TTL.
    pub fn issue(&self, user: &str, now: Instant) -> Result<String, RandomError> {
        let secret = random_letters::<SECRET_LEN>()?;
        let mut t = self.lock();
        // Expired tokens are dropped at most once a second, here, so the
        // table stays as small as the tokens in use.
        if now.saturating_duration_since(t.last_sweep) >= Duration::from_secs(1) {
            t.by_id.retain(|_, e| e.expires > now);
            t.last_sweep = now;
        }
        let id = t.next_id;
        t.next_id += 1;
        t.by_id.insert(
            id,
            Entry {
                secret,
                user: Arc::from(user),
                expires: now + self.ttl,
            },
        );
        // The letters are ASCII.
        Ok(format!("{}.{id}", String::from_utf8_lossy(&secret)))
    }

    /// The user a token names, if it is valid; renews it.
    pub fn resolve(&self, token: &str, now: Instant) -> Option<Arc<str>> {
        let (secret, id) = token.rsplit_once('.')?;
        let id: u64 = id.parse().ok()?;
        let mut t = self.lock();
        let entry = t.by_id.get_mut(&id)?;
        let same: bool = entry.secret.as_slice().ct_eq(secret.as_bytes()).into();
        if !same {
            return None;
        }
        if entry.expires <= now {
            t.by_id.remove(&id);
            return None;
        }
        entry.expires = now + self.ttl;
        Some(entry.user.clone())
    }

    /// Drops every token of `user`.
    pub fn invalidate_user(&self, user: &str) {
        self.lock().by_id.retain(|_, e| &*e.user != user);
    }

    /// Drops every token.
    pub fn clear(&self) {
        self.lock().by_id.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_user_until_they_expire_and_use_renews_them() {
        let tokens = Tokens::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let a = tokens.issue("alice", t0).expect("token");
        let b = tokens.issue("bob", t0).expect("token");
        assert_ne!(a, b);
        assert_eq!(tokens.resolve(&a, t0).as_deref(), Some("alice"));
        // Used at 9 s: valid until 19 s.
        assert!(tokens.resolve(&a, t0 + Duration::from_secs(9)).is_some());
        assert!(tokens.resolve(&a, t0 + Duration::from_secs(18)).is_some());
        // bob's was not used: gone at 10 s, for good.
        assert!(tokens.resolve(&b, t0 + Duration::from_secs(10)).is_none());
        assert!(tokens.resolve(&b, t0).is_none());
    }

    #[test]
    fn a_wrong_or_malformed_token_names_no_one() {
        let tokens = Tokens::new(DEFAULT_TTL);
        let now = Instant::now();
        let a = tokens.issue("alice", now).expect("token");
        let (secret, id) = a.rsplit_once('.').expect("shape");
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(secret.bytes().all(|b| b.is_ascii_alphabetic()));
        let mut wrong = secret.as_bytes().to_vec();
        wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
        let wrong = format!("{}.{id}", String::from_utf8_lossy(&wrong));
        for bad in [
            wrong.as_str(),
            secret,
            "",
            ".",
            "x.1",
            &format!("{secret}.99"),
            &format!("{secret}x.{id}"),
        ] {
            assert!(tokens.resolve(bad, now).is_none(), "{bad}");
        }
        assert!(tokens.resolve(&a, now).is_some());
    }

    #[test]
    fn invalidation_drops_one_users_tokens_or_all() {
        let tokens = Tokens::new(DEFAULT_TTL);
        let now = Instant::now();
        let a1 = tokens.issue("alice", now).expect("token");
        let a2 = tokens.issue("alice", now).expect("token");
        let b = tokens.issue("bob", now).expect("token");
        tokens.invalidate_user("alice");
        assert!(tokens.resolve(&a1, now).is_none());
        assert!(tokens.resolve(&a2, now).is_none());
        assert!(tokens.resolve(&b, now).is_some());
        tokens.clear();
        assert!(tokens.resolve(&b, now).is_none());
    }

    #[test]
    fn letters_are_spread_over_the_alphabet() {
        let mut seen = [false; 52];
        for _ in 0..50 {
            for b in random_letters::<SECRET_LEN>().expect("random") {
                let at = LETTERS.iter().position(|&l| l == b).expect("a letter");
                seen[at] = true;
            }
        }
        assert!(seen.iter().all(|&s| s), "1,600 letters cover all 52");
    }
}
