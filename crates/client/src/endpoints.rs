//! Which controller a call goes to, and what to do after each answer (design
//! `docs/design/ha-controller.md` §7.1): a list of base URLs, the current one, and a pure
//! state machine from an attempt's outcome to the next step. No I/O here: the client does
//! the name lookups and the requests, and feeds what happened in.
//!
//! Invariants:
//! - A call is sent again only when it certainly did not run: the connection failed before
//!   the request was sent (refused, TLS failure, timeout while connecting), or a controller
//!   answered `421 Misdirected Request` (a standby runs no change). A read (`GET`) is also
//!   sent again after any transport failure or a 503. A change whose connection broke after
//!   sending fails at once: its outcome is unknown and the caller decides.
//! - Within one call each target is dialled at most once, and leader hints are followed at
//!   most [`MAX_HOPS`] times, so two controllers naming each other cannot loop.
//! - A leader hint (`Torc-Leader`) is followed only to one of the configured controllers (or
//!   an address they expand to), or, for a caller configured with a single URL, to a URL of
//!   the same scheme as the controller that gave it; never from `https` to `http`, never to
//!   another scheme. A caller given several controllers asks the next of them instead: the
//!   leader's URL is how the rack reaches it, which such a caller (the host of a namespaced
//!   rack) may not be allowed to send to. Under the rack's TLS the
//!   leader's certificate is still checked for `torc_tls::CONTROLLER_NAME`, so a hint cannot
//!   send the caller's token to a server that is not a rack controller; over plain HTTP the
//!   hint is as trustworthy as the controller that gave it, which already saw the token.
//! - A URL whose host is a DNS name is expanded into one target per address (when TLS does
//!   not depend on the name: plain HTTP, or the rack's TLS that checks the controller's fixed
//!   name); the names are looked up again after a call in which every target failed.

use std::net::SocketAddr;

use reqwest::Url;

/// How many leader hints one call follows.
pub const MAX_HOPS: u8 = 3;
/// How many leaders learned from hints (not configured) are remembered.
const MAX_LEARNED: usize = 4;

/// Why a list of controller URLs is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointsError {
    #[error("no controller URL given")]
    Empty,
    #[error("{list:?}: an empty entry in the list of controller URLs")]
    EmptyEntry { list: String },
    #[error("{url:?} is not a controller URL: {reason}")]
    Invalid { url: String, reason: String },
}

/// Whether a call may run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An idempotent read (`GET`): sent again after any failure.
    Read,
    /// A change: sent again only when it certainly did not run.
    Change,
}

/// What one attempt of a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A controller answered with `status`, naming `leader` in `Torc-Leader` when it did.
    Answered { status: u16, leader: Option<String> },
    /// The request was certainly not sent (connection refused, TLS failure, connect
    /// timeout); the text says why.
    NotSent(String),
    /// The request may have been sent: the connection broke or timed out afterwards.
    Lost(String),
}

/// What the client does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Give the caller this attempt's answer.
    Return,
    /// Send the call again, to this base URL.
    Retry(String),
    /// Give up: the caller gets this attempt's error, or every attempt's when there were several.
    Fail,
}

/// One attempt of a call, for the error that names every URL tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    pub url: String,
    pub what: String,
}

/// One call in progress: what it tried.
#[derive(Debug, Clone)]
pub struct Call {
    kind: Kind,
    tried: Vec<Tried>,
    hops: u8,
}

impl Call {
    pub fn tried(&self) -> &[Tried] {
        &self.tried
    }

    fn visited(&self, url: &str) -> bool {
        self.tried.iter().any(|t| t.url == url)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Configured {
    url: Url,
    /// The base as given, without a trailing `/`.
    base: String,
    /// Whether its host is a name to look up (and TLS allows dialling an address instead).
    expand: bool,
}

/// The controllers a client knows and the one it talks to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    configured: Vec<Configured>,
    /// What is dialled, in order: each configured URL or its addresses, then learned leaders.
    targets: Vec<String>,
    /// How many of `targets` are learned leaders (at the end).
    learned: usize,
    current: usize,
    /// Whether the names are to be looked up before the next call.
    stale: bool,
}

/// A base URL without its trailing `/`.
fn base_of(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

fn parse_one(text: &str) -> Result<Url, EndpointsError> {
    let invalid = |reason: &str| EndpointsError::Invalid {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("it names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not go in the URL (use a token)"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment"));
    }
    Ok(url)
}

impl Endpoints {
    /// Parses a comma-separated list of base URLs. `name_checked_tls` says whether TLS checks
    /// the controller's fixed name (the rack's TLS) rather than the dialled host; only then
    /// are `https` names expanded into addresses.
    pub fn parse(list: &str, name_checked_tls: bool) -> Result<Endpoints, EndpointsError> {
        if list.trim().is_empty() {
            return Err(EndpointsError::Empty);
        }
        let mut configured: Vec<Configured> = Vec::new();
        for entry in list.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(EndpointsError::EmptyEntry {
                    list: list.to_string(),
                });
            }
            let url = parse_one(entry)?;
            let base = base_of(&url);
            if configured.iter().any(|c| c.base == base) {
                continue;
            }
            let named = url.domain().is_some();
            configured.push(Configured {
                expand: named && (url.scheme() == "http" || name_checked_tls),
                url,
                base,
            });
        }
        let targets = configured.iter().map(|c| c.base.clone()).collect();
        let stale = configured.iter().any(|c| c.expand);
        Ok(Endpoints {
            configured,
            targets,
            learned: 0,
            current: 0,
            stale,
        })
    }

    /// The configured base URLs, as given (comma-joined, what `TORC_CONTROLLERS` holds).
    pub fn configured(&self) -> Vec<String> {
        self.configured.iter().map(|c| c.base.clone()).collect()
    }

    /// The base URL calls go to now.
    pub fn current(&self) -> &str {
        &self.targets[self.current]
    }

    /// Every base URL dialled, in order (addresses of names, learned leaders last).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The names to look up before the next call: `(index, host, port)` of each configured
    /// URL to expand. Empty unless the names are stale (at first, and after a failed round).
    pub fn lookups(&self) -> Vec<(usize, String, u16)> {
        if !self.stale {
            return Vec::new();
        }
        self.configured
            .iter()
            .enumerate()
            .filter(|(_, c)| c.expand)
            .filter_map(|(i, c)| {
                Some((
                    i,
                    c.url.host_str()?.to_string(),
                    c.url.port_or_known_default()?,
                ))
            })
            .collect()
    }

    /// Takes the lookups' answers: each configured URL becomes one target per address (or
    /// stays as it is when its lookup failed or found nothing). The current target stays
    /// current when it is still there; else the first address of what it came from is.
    pub fn expand(&mut self, answers: &[(usize, Vec<SocketAddr>)]) {
        let current = self.targets[self.current].clone();
        let mut from_current = None;
        let mut targets = Vec::new();
        for (i, c) in self.configured.iter().enumerate() {
            let first = targets.len();
            let addrs = answers
                .iter()
                .filter(|(j, _)| *j == i)
                .flat_map(|(_, a)| a.iter().map(SocketAddr::ip));
            for ip in addrs {
                let mut url = c.url.clone();
                if url.set_ip_host(ip).is_err() {
                    continue;
                }
                let base = base_of(&url);
                if !targets.contains(&base) {
                    targets.push(base);
                }
            }
            if targets.len() == first {
                targets.push(c.base.clone());
            }
            if c.base == current || targets[first..].contains(&current) {
                from_current = Some(first);
            }
        }
        let learned: Vec<String> = self.targets[self.targets.len() - self.learned..]
            .iter()
            .filter(|l| !targets.contains(l))
            .cloned()
            .collect();
        self.learned = learned.len();
        targets.extend(learned);
        self.current = targets
            .iter()
            .position(|t| *t == current)
            .or(from_current)
            .unwrap_or(0);
        self.targets = targets;
        self.stale = false;
    }

    /// Starts a call.
    pub fn begin(&self, kind: Kind) -> Call {
        Call {
            kind,
            tried: Vec::new(),
            hops: 0,
        }
    }

    /// Whether to follow a leader hint given by `from`: the hint's base URL, or why not.
    pub fn accept_leader(&self, from: &str, hint: &str) -> Result<String, String> {
        let url = parse_one(hint.trim()).map_err(|e| e.to_string())?;
        let base = base_of(&url);
        if self.targets.contains(&base) || self.configured.iter().any(|c| c.base == base) {
            return Ok(base);
        }
        // A caller given every controller knows how it reaches each: a leader's URL that is
        // not among them is how the rack reaches it (an address the caller may not send to,
        // such as a namespaced rack's from the host), and the next configured one is asked.
        if self.configured.len() > 1 {
            return Err(format!(
                "the leader {base} is not one of the configured controllers: not followed"
            ));
        }
        let scheme = Url::parse(from).map(|u| u.scheme().to_string());
        match scheme {
            Ok(s) if s == url.scheme() => Ok(base),
            Ok(s) => Err(format!(
                "the leader {base} is not a configured controller and not {s}: not followed"
            )),
            Err(e) => Err(format!("{from}: {e}")),
        }
    }

    fn index_of(&mut self, base: &str) -> usize {
        if let Some(i) = self.targets.iter().position(|t| t == base) {
            return i;
        }
        if self.learned == MAX_LEARNED {
            let oldest = self.targets.len() - self.learned;
            self.targets.remove(oldest);
            self.learned -= 1;
            if self.current > oldest {
                self.current -= 1;
            }
        }
        self.targets.push(base.to_string());
        self.learned += 1;
        self.targets.len() - 1
    }

    /// The next target after `from` that this call has not tried, made current.
    fn advance(&mut self, call: &Call, from: &str) -> Option<String> {
        let n = self.targets.len();
        let start = self.targets.iter().position(|t| t == from).unwrap_or(n - 1);
        let next = (1..=n)
            .map(|k| (start + k) % n)
            .find(|&i| !call.visited(&self.targets[i]))?;
        self.current = next;
        Some(self.targets[next].clone())
    }

    /// After the whole list failed: move on from `from` (so the next call starts elsewhere)
    /// and look the names up again before it.
    fn exhausted(&mut self, from: &str) -> Next {
        let n = self.targets.len();
        if self.targets[self.current] == from {
            self.current = (self.current + 1) % n;
        }
        self.stale = self.configured.iter().any(|c| c.expand);
        Next::Fail
    }

    /// A read answered by a controller that does not act (`Torc-Stale`): the next controller
    /// this call has not tried, made current (the leader is most likely among them), or
    /// `None` when every one was tried (the stale answer is then the best there is).
    pub fn stale(&mut self, call: &mut Call, from: &str) -> Option<String> {
        if call.kind != Kind::Read {
            return None;
        }
        call.tried.push(Tried {
            url: from.to_string(),
            what: "answered from a standby (possibly stale)".to_string(),
        });
        self.advance(call, from)
    }

    /// What to do after an attempt of `call` sent to the base URL `from` came to `outcome`.
    pub fn decide(&mut self, call: &mut Call, from: &str, outcome: Outcome) -> Next {
        match outcome {
            Outcome::Answered { status, leader } => {
                let hint = leader.map(|h| (self.accept_leader(from, &h), h));
                if let Some((Ok(leader), _)) = &hint
                    && leader != from
                {
                    self.current = self.index_of(leader);
                }
                if status == 421 {
                    let what = match &hint {
                        Some((Ok(l), _)) => format!("421 Misdirected Request, the leader is {l}"),
                        Some((Err(why), _)) => format!("421 Misdirected Request; {why}"),
                        None => "421 Misdirected Request, no leader named".to_string(),
                    };
                    call.tried.push(Tried {
                        url: from.to_string(),
                        what,
                    });
                    if let Some((Ok(leader), _)) = hint
                        && !call.visited(&leader)
                    {
                        if call.hops == MAX_HOPS {
                            // Leaders keep naming others: the election is moving; the caller
                            // tries again later, at the last one named.
                            return self.exhausted(from);
                        }
                        call.hops += 1;
                        return Next::Retry(leader);
                    }
                    return match self.advance(call, from) {
                        Some(next) => Next::Retry(next),
                        None => self.exhausted(from),
                    };
                }
                if status == 503 && call.kind == Kind::Read {
                    call.tried.push(Tried {
                        url: from.to_string(),
                        what: "503 Service Unavailable".to_string(),
                    });
                    return match self.advance(call, from) {
                        Some(next) => Next::Retry(next),
                        None => Next::Return,
                    };
                }
                Next::Return
            }
            Outcome::NotSent(why) => {
                call.tried.push(Tried {
                    url: from.to_string(),
                    what: why,
                });
                match self.advance(call, from) {
                    Some(next) => Next::Retry(next),
                    None => self.exhausted(from),
                }
            }
            Outcome::Lost(why) => {
                call.tried.push(Tried {
                    url: from.to_string(),
                    what: why,
                });
                match (self.advance(call, from), call.kind) {
                    (Some(next), Kind::Read) => Next::Retry(next),
                    // The next call goes to the next controller; this one's outcome is unknown.
                    (Some(_), Kind::Change) => Next::Fail,
                    (None, _) => self.exhausted(from),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
