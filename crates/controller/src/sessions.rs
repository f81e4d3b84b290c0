//! The web UI's sessions, and what the route policy knows beyond credentials: whether the
//! controller runs `--insecure`, and the names a browser may reach it by.
//!
//! A session is opened with an admin's or a viewer's token (`POST /api/v1/session`) and then
//! held by the browser as a cookie (see `crate::http::access`). Sessions live in memory: a
//! controller restart logs everyone out. Only the SHA-256 of a session id is kept.
//!
//! Invariants: at most `MAX_SESSIONS` sessions, at most `MAX_SESSIONS_EACH` per identity
//! (past that an identity's own oldest is dropped, never another's); an expired session is
//! never returned.

use std::collections::HashMap;
use std::sync::Mutex;

use torc_types::UnixMillis;

use crate::auth::Who;

/// How long a UI session lasts.
pub const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Most sessions held at once; past it the oldest is dropped.
const MAX_SESSIONS: usize = 1024;
/// Most sessions one identity holds; past it its own oldest is dropped, never another's.
const MAX_SESSIONS_EACH: usize = 16;

/// The access state of a controller.
pub(crate) struct Access {
    /// `--insecure`: no credentials at all.
    pub insecure: bool,
    pub sessions: Sessions,
    /// DNS names a browser may reach the controller by (IP literals always may).
    pub hosts: Vec<String>,
}

impl Access {
    pub fn new(insecure: bool, hosts: Vec<String>) -> Access {
        Access {
            insecure,
            sessions: Sessions::default(),
            hosts,
        }
    }
}

/// The sessions of the web UI, in memory.
#[derive(Default)]
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub who: Who,
    pub expires_at: UnixMillis,
}

fn session_key(id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Opens a session for `who`: its id (for the cookie) and when it expires.
    pub fn open(&self, who: Who, now: UnixMillis) -> (String, UnixMillis) {
        let mut id = [0u8; 32];
        torc_types::random_bytes(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now + SESSION_TTL_MS;
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires_at > now);
        let mine: Vec<(String, UnixMillis)> = map
            .iter()
            .filter(|(_, s)| s.who == who)
            .map(|(k, s)| (k.clone(), s.expires_at))
            .collect();
        if mine.len() >= MAX_SESSIONS_EACH
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, e)| *e)
        {
            map.remove(oldest);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(session_key(&id), Session { who, expires_at });
        (id, expires_at)
    }

    /// The live session with this id.
    pub fn get(&self, id: &str, now: UnixMillis) -> Option<Session> {
        let map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&session_key(id))
            .filter(|s| s.expires_at > now)
            .cloned()
    }

    pub fn close(&self, id: &str) {
        self.by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session_key(id));
    }
}
