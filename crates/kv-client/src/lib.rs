//! The etcd v3 API as torc speaks it, for both sides: the messages and gRPC
//! services compiled from torc's own declarations of etcd 3.4's protos
//! ([`proto`]), the gRPC codec they use ([`codec`]), and the [`Client`] the
//! rest of torc talks to the rack's state store with (torc kv or a real
//! etcd; etcd's authentication and TLS included).
//!
//! What it is not: the server. torc kv (`torc-kv`) implements the service
//! traits of [`proto`]; a crate that only talks to a store depends on this
//! crate alone and pulls in none of the server's storage, log or auth code.
//! Its role is that of etcd's own `api` and `client` modules.
//!
//! Invariants:
//! - the protos keep etcd 3.4's package, service, method and message names
//!   and field numbers, so unmodified etcd clients and servers interoperate
//!   with torc's;
//! - the [`rpctypes`] texts are etcd's: torc kv sends them and the client
//!   recognises them, from these constants only.
//!
//! Code map: `client`, the client ([`Client`], [`Credentials`],
//! [`ClientTls`], [`ClientOptions`]); `endpoints`, the members of a client with
//! several endpoints, which one is pinned and when to move ([`EndpointFailure`]); `lease`,
//! grant, revoke and keepalives ([`Lease`], [`KeepAlive`], [`KeepAliveTask`]); [`election`],
//! etcd's `concurrency.Election` on the client side ([`Election`], [`Leadership`] and its
//! fence); [`watch`], a prefix watch resumed after failures ([`PrefixWatch`]) and paged
//! reads at one revision ([`Client::range_all`], [`Client::range_all_within`] for large values); [`codec`], prost's codec with small starting buffers;
//! [`proto`], the generated code (`build.rs` compiles `proto/`);
//! [`prefix_end`], etcdctl's `--prefix` as a range end.

mod client;
pub mod codec;
pub mod election;
mod endpoints;
mod lease;
pub mod watch;

pub use client::{
    AuthChannel, Client, ClientError, ClientOptions, ClientTls, Credentials, TokenInterceptor,
    read_password_file,
};
pub use election::{Election, ElectionError, LeaderKey, Leadership};
pub use endpoints::EndpointFailure;
pub use lease::{KeepAlive, KeepAliveState, KeepAliveTask, Lease, Renewal};
pub use watch::{PrefixWatch, RangeAll, WatchBatch, WatchError};

/// etcd's error texts that the client acts on, as etcd 3.4 sends them (etcd's
/// `api/v3rpc/rpctypes`). torc kv's `EtcdError` sends these same constants.
pub mod rpctypes {
    /// The call's token is unknown or expired: authenticate again.
    pub const INVALID_AUTH_TOKEN: &str = "etcdserver: invalid auth token";
    /// The call carried no token and the server wants one.
    pub const USER_EMPTY: &str = "etcdserver: user name is empty";
    /// Authentication is off: call without a token.
    pub const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";
    /// The member has no raft leader (sent when the call asked for one, `hasleader`).
    pub const NO_LEADER: &str = "etcdserver: no leader";
    /// The lease a call names does not exist (expired or revoked).
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    /// The metadata key and value of clientv3's `WithRequireLeader`: a member without a
    /// leader refuses the call (`NO_LEADER`) instead of holding it.
    pub const REQUIRE_LEADER_KEY: &str = "hasleader";
    pub const HAS_LEADER: &str = "true";
}

/// The `range_end` that selects every key starting with `prefix` (what `etcdctl --prefix`
/// sends): the prefix with its last byte below 0xff incremented; `\0` (all keys) when there
/// is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Code generated from torc's own declarations of the etcd v3 protos
/// (`proto/`): messages, typed gRPC clients and the service traits a server
/// implements.
pub mod proto {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_etcdctls() {
        assert_eq!(prefix_end(b"/torc/"), b"/torc0");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        // Nothing to increment: every key from the prefix on.
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
