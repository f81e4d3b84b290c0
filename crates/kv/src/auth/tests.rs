//! The auth rules, pure: who may do what, and what each change records.

use std::collections::HashMap;

use super::*;
use crate::proto::authpb::permission::Type as PermType;

fn user(name: &str) -> Caller {
    Caller::User(Arc::from(name))
}

fn root() -> Caller {
    user(ROOT_USER)
}

fn perm(t: PermType, key: &str, end: &str) -> Permission {
    Permission {
        perm_type: t as i32,
        key: key.as_bytes().to_vec().into(),
        range_end: end.as_bytes().to_vec().into(),
    }
}

/// Leases by id, with their keys.
struct Leases(HashMap<i64, Vec<&'static str>>);

impl LeaseKeys for Leases {
    fn lease_keys(&self, id: i64) -> Option<Vec<Bytes>> {
        self.0.get(&id).map(|keys| {
            keys.iter()
                .map(|k| Bytes::from_static(k.as_bytes()))
                .collect()
        })
    }
}

fn no_leases() -> Leases {
    Leases(HashMap::new())
}

/// Auth enabled; `root`; `alice` with role `app`: read /a, readwrite
/// [/p/, /p0), write [/w1, /w9); `bob` with no role.
fn rack() -> AuthState {
    let mut a = AuthState::default();
    let anyone = Caller::Anonymous;
    a.user_add(&anyone, ROOT_USER, Some("h".into()))
        .expect("root");
    a.user_grant_role(&anyone, ROOT_USER, ROOT_ROLE)
        .expect("root role");
    a.role_add(&anyone, ROOT_ROLE).expect("role root");
    a.user_add(&anyone, "alice", Some("h".into()))
        .expect("alice");
    a.user_add(&anyone, "bob", Some("h".into())).expect("bob");
    a.role_add(&anyone, "app").expect("app");
    for p in [
        perm(PermType::Read, "/a", ""),
        perm(PermType::Readwrite, "/p/", "/p0"),
        perm(PermType::Write, "/w1", "/w9"),
    ] {
        a.role_grant_permission(&anyone, "app", Some(&p))
            .expect("grant");
    }
    a.user_grant_role(&anyone, "alice", "app")
        .expect("grant role");
    a.enable(&anyone).expect("enable");
    a
}

fn put(key: &str, lease: i64, prev_kv: bool) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        lease,
        prev_kv,
        ..Default::default()
    }
}

#[test]
fn with_auth_disabled_anyone_may_do_anything() {
    let a = AuthState::default();
    let anyone = Caller::Anonymous;
    assert_eq!(a.check(&anyone, Access::Write, b"/x", b""), Ok(()));
    assert_eq!(a.check_admin(&anyone), Ok(()));
    assert_eq!(a.require_user(&anyone), Ok(()));
    assert_eq!(a.password_hash("root"), Err(EtcdError::AuthNotEnabled));
}

#[test]
fn enabling_needs_a_root_user_with_the_root_role() {
    let mut a = AuthState::default();
    let anyone = Caller::Anonymous;
    assert_eq!(a.enable(&anyone), Err(EtcdError::RootUserNotExist));
    a.user_add(&anyone, ROOT_USER, Some("h".into()))
        .expect("root");
    assert_eq!(a.enable(&anyone), Err(EtcdError::RootRoleNotExist));
    // etcd lets the root role be granted before the role exists.
    a.user_grant_role(&anyone, ROOT_USER, ROOT_ROLE)
        .expect("grant");
    assert_eq!(a.enable(&anyone), Ok(vec![AuthMutation::Enabled(true)]));
    assert!(a.enabled());
    // Enabled: only root may change anything, enabling again included.
    assert_eq!(a.enable(&anyone), Err(EtcdError::UserEmpty));
    assert_eq!(a.enable(&root()), Ok(vec![]));
}

#[test]
fn anonymous_unknown_and_ordinary_callers_are_told_apart_as_etcd_does() {
    let a = rack();
    let anyone = Caller::Anonymous;
    assert_eq!(
        a.check(&anyone, Access::Read, b"/a", b""),
        Err(EtcdError::UserEmpty)
    );
    assert_eq!(a.require_user(&anyone), Err(EtcdError::UserEmpty));
    assert_eq!(a.check_admin(&anyone), Err(EtcdError::UserEmpty));
    let ghost = user("ghost");
    assert_eq!(
        a.check(&ghost, Access::Read, b"/a", b""),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(a.check_admin(&ghost), Err(EtcdError::UserNotFound));
    assert_eq!(
        a.check_admin(&user("alice")),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(
        a.check(&user("bob"), Access::Read, b"/a", b""),
        Err(EtcdError::PermissionDenied)
    );
}

#[test]
fn root_may_do_everything() {
    let a = rack();
    let r = root();
    assert_eq!(a.check(&r, Access::Write, b"\0", b"\0"), Ok(()));
    assert_eq!(a.check_admin(&r), Ok(()));
    let leases = Leases(HashMap::from([(7, vec!["/secret"])]));
    assert_eq!(a.check_put(&r, &put("/x", 7, true), &leases), Ok(()));
    assert_eq!(
        a.user_list(&r),
        Ok(vec!["alice".into(), "bob".into(), "root".into()])
    );
}

#[test]
fn puts_need_write_and_read_for_prev_kv_and_write_on_the_leases_keys() {
    let a = rack();
    let alice = user("alice");
    let none = no_leases();
    assert_eq!(a.check_put(&alice, &put("/p/x", 0, false), &none), Ok(()));
    assert_eq!(a.check_put(&alice, &put("/p/x", 0, true), &none), Ok(()));
    assert_eq!(a.check_put(&alice, &put("/w5", 0, false), &none), Ok(()));
    // Write-only: prev_kv would read.
    assert_eq!(
        a.check_put(&alice, &put("/w5", 0, true), &none),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(
        a.check_put(&alice, &put("/a", 0, false), &none),
        Err(EtcdError::PermissionDenied)
    );
    // A lease holding a key alice cannot write cannot take her keys.
    let leases = Leases(HashMap::from([
        (1, vec!["/p/y", "/w2"]),
        (2, vec!["/p/y", "/other"]),
    ]));
    assert_eq!(a.check_put(&alice, &put("/p/x", 1, false), &leases), Ok(()));
    assert_eq!(
        a.check_put(&alice, &put("/p/x", 2, false), &leases),
        Err(EtcdError::PermissionDenied)
    );
    // An unknown lease is the core's business (lease not found), not auth's.
    assert_eq!(
        a.check_put(&alice, &put("/p/x", 99, false), &leases),
        Ok(())
    );
    assert_eq!(
        a.check_lease(&alice, Access::Write, 2, &leases),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(a.check_lease(&root(), Access::Write, 2, &leases), Ok(()));
}

#[test]
fn deletes_need_write_on_the_whole_range_and_read_for_prev_kv() {
    let a = rack();
    let alice = user("alice");
    let del = |key: &str, end: &str, prev_kv: bool| pb::DeleteRangeRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: end.as_bytes().to_vec().into(),
        prev_kv,
    };
    assert_eq!(a.check_delete(&alice, &del("/w1", "/w9", false)), Ok(()));
    assert_eq!(
        a.check_delete(&alice, &del("/w1", "/w9", true)),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(a.check_delete(&alice, &del("/p/", "/p0", true)), Ok(()));
    assert_eq!(
        a.check_delete(&alice, &del("/w0", "/w9", false)),
        Err(EtcdError::PermissionDenied)
    );
}

#[test]
fn txns_need_read_on_compares_and_every_request_of_both_branches_nested_too() {
    use pb::request_op::Request;
    let a = rack();
    let alice = user("alice");
    let none = no_leases();
    let op = |r: Request| pb::RequestOp { request: Some(r) };
    let get = |k: &str| {
        op(Request::RequestRange(pb::RangeRequest {
            key: k.as_bytes().to_vec().into(),
            ..Default::default()
        }))
    };
    let compare = |k: &str| pb::Compare {
        key: k.as_bytes().to_vec().into(),
        ..Default::default()
    };
    let txn = |compare: Vec<pb::Compare>, success: Vec<pb::RequestOp>, failure| pb::TxnRequest {
        compare,
        success,
        failure,
    };
    let ok = txn(
        vec![compare("/a")],
        vec![op(Request::RequestPut(put("/p/x", 0, false)))],
        vec![get("/p/y")],
    );
    assert_eq!(a.check_txn(&alice, &ok, &none), Ok(()));
    // A compare on a key she cannot read.
    let t = txn(vec![compare("/w5")], vec![], vec![]);
    assert_eq!(
        a.check_txn(&alice, &t, &none),
        Err(EtcdError::PermissionDenied)
    );
    // The branch not taken counts too.
    let t = txn(vec![], vec![], vec![get("/secret")]);
    assert_eq!(
        a.check_txn(&alice, &t, &none),
        Err(EtcdError::PermissionDenied)
    );
    // A nested txn (etcd before 3.4.42 did not look inside).
    let t = txn(
        vec![],
        vec![op(Request::RequestTxn(txn(
            vec![],
            vec![get("/secret")],
            vec![],
        )))],
        vec![],
    );
    assert_eq!(
        a.check_txn(&alice, &t, &none),
        Err(EtcdError::PermissionDenied)
    );
    // A put with prev_kv on a write-only key (etcd before 3.4.44 did not
    // look at prev_kv or leases in a txn).
    let t = txn(
        vec![],
        vec![op(Request::RequestPut(put("/w5", 0, true)))],
        vec![],
    );
    assert_eq!(
        a.check_txn(&alice, &t, &none),
        Err(EtcdError::PermissionDenied)
    );
}

#[test]
fn users_may_read_themselves_and_their_roles() {
    let a = rack();
    let alice = user("alice");
    assert_eq!(a.user_get(&alice, "alice"), Ok(vec!["app".to_string()]));
    assert_eq!(a.user_get(&alice, "bob"), Err(EtcdError::PermissionDenied));
    assert_eq!(a.role_get(&alice, "app").map(|p| p.len()), Ok(3));
    assert_eq!(
        a.role_get(&alice, ROOT_ROLE),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(
        a.role_get(&user("bob"), "app"),
        Err(EtcdError::PermissionDenied)
    );
    assert_eq!(a.user_list(&alice), Err(EtcdError::PermissionDenied));
    assert_eq!(a.role_list(&alice), Err(EtcdError::PermissionDenied));
    assert_eq!(
        a.role_list(&root()),
        Ok(vec!["app".to_string(), ROOT_ROLE.to_string()])
    );
}

#[test]
fn root_cannot_be_locked_out_while_auth_is_enabled() {
    let mut a = rack();
    let r = root();
    assert_eq!(
        a.user_delete(&r, ROOT_USER),
        Err(EtcdError::InvalidAuthMgmt)
    );
    assert_eq!(
        a.user_revoke_role(&r, ROOT_USER, ROOT_ROLE),
        Err(EtcdError::InvalidAuthMgmt)
    );
    assert_eq!(
        a.role_delete(&r, ROOT_ROLE),
        Err(EtcdError::InvalidAuthMgmt)
    );
    a.disable(&r).expect("disable");
    let anyone = Caller::Anonymous;
    assert!(a.user_revoke_role(&anyone, ROOT_USER, ROOT_ROLE).is_ok());
    assert!(a.role_delete(&anyone, ROOT_ROLE).is_ok());
    assert!(a.user_delete(&anyone, ROOT_USER).is_ok());
}

#[test]
fn changes_fail_with_etcds_errors() {
    let mut a = rack();
    let r = root();
    assert_eq!(a.user_add(&r, "", None), Err(EtcdError::UserEmpty));
    assert_eq!(
        a.user_add(&r, "bob", None),
        Err(EtcdError::UserAlreadyExist)
    );
    assert_eq!(a.user_delete(&r, "ghost"), Err(EtcdError::UserNotFound));
    assert_eq!(
        a.user_change_password(&r, "ghost", "h".into()),
        Err(EtcdError::UserNotFound)
    );
    assert_eq!(
        a.user_grant_role(&r, "ghost", "app"),
        Err(EtcdError::UserNotFound)
    );
    assert_eq!(
        a.user_grant_role(&r, "bob", "ghost"),
        Err(EtcdError::RoleNotFound)
    );
    assert_eq!(
        a.user_revoke_role(&r, "bob", "app"),
        Err(EtcdError::RoleNotGranted)
    );
    assert_eq!(a.role_add(&r, ""), Err(EtcdError::RoleEmpty));
    assert_eq!(a.role_add(&r, "app"), Err(EtcdError::RoleAlreadyExist));
    assert_eq!(a.role_delete(&r, "ghost"), Err(EtcdError::RoleNotFound));
    let p = perm(PermType::Read, "/x", "");
    assert_eq!(
        a.role_grant_permission(&r, "ghost", Some(&p)),
        Err(EtcdError::RoleNotFound)
    );
    assert_eq!(
        a.role_grant_permission(&r, "app", None),
        Err(EtcdError::PermissionNotGiven)
    );
    let empty = perm(PermType::Read, "/x", "/x");
    assert_eq!(
        a.role_grant_permission(&r, "app", Some(&empty)),
        Err(EtcdError::InvalidAuthMgmt)
    );
    assert_eq!(
        a.role_revoke_permission(&r, "app", b"/x", b""),
        Err(EtcdError::PermissionNotGranted)
    );
    assert_eq!(
        a.role_revoke_permission(&r, "ghost", b"/a", b""),
        Err(EtcdError::RoleNotFound)
    );
    // Nothing above changed anything.
    assert_eq!(a.revision(), rack().revision());
    // Non-root callers are refused before anything else.
    assert_eq!(
        a.role_add(&user("alice"), "x"),
        Err(EtcdError::PermissionDenied)
    );
}

#[test]
fn every_change_but_enabling_counts_in_the_revision_and_is_recorded() {
    let mut a = AuthState::default();
    let anyone = Caller::Anonymous;
    assert_eq!(a.revision(), 1);
    let out = a.role_add(&anyone, "r").expect("role");
    assert_eq!(a.revision(), 2);
    assert!(
        matches!(&out[..], [AuthMutation::PutRole(r), AuthMutation::Revision(2)] if r.name == "r")
    );
    a.user_add(&anyone, "u", None).expect("user");
    let out = a.user_grant_role(&anyone, "u", "r").expect("grant");
    assert_eq!(out.len(), 2);
    // Granting it again changes nothing and records nothing.
    assert_eq!(a.user_grant_role(&anyone, "u", "r"), Ok(vec![]));
    assert_eq!(a.revision(), 4);
    // Deleting the role takes it from the user, in the same change.
    let out = a.role_delete(&anyone, "r").expect("delete");
    assert!(matches!(&out[..], [
        AuthMutation::DeleteRole(name),
        AuthMutation::PutUser(u),
        AuthMutation::Revision(5),
    ] if name == "r" && u.roles.is_empty()));
}

#[test]
fn granting_the_same_range_again_changes_its_type_and_permissions_stay_sorted() {
    let mut a = rack();
    let r = root();
    a.role_grant_permission(&r, "app", Some(&perm(PermType::Write, "/a", "")))
        .expect("grant");
    a.role_grant_permission(&r, "app", Some(&perm(PermType::Read, "/0", "\0")))
        .expect("grant");
    let perms = a.role_get(&r, "app").expect("role");
    let keys: Vec<(&[u8], i32)> = perms.iter().map(|p| (&p.key[..], p.perm_type)).collect();
    assert_eq!(
        keys,
        vec![
            (&b"/0"[..], PermType::Read as i32),
            (&b"/a"[..], PermType::Write as i32),
            (&b"/p/"[..], PermType::Readwrite as i32),
            (&b"/w1"[..], PermType::Write as i32),
        ]
    );
    // /a is write-only now; /zzz readable through [/0, end).
    let alice = user("alice");
    assert_eq!(
        a.check(&alice, Access::Read, b"/a", b""),
        Ok(()),
        "via /0 open-ended"
    );
    assert_eq!(a.check(&alice, Access::Write, b"/a", b""), Ok(()));
    a.role_revoke_permission(&r, "app", b"/0", b"\0")
        .expect("revoke");
    assert_eq!(
        a.check(&alice, Access::Read, b"/a", b""),
        Err(EtcdError::PermissionDenied)
    );
    a.user_revoke_role(&r, "alice", "app").expect("revoke role");
    assert_eq!(
        a.check(&alice, Access::Write, b"/p/x", b""),
        Err(EtcdError::PermissionDenied)
    );
}

#[test]
fn authenticate_knows_only_users_with_a_password() {
    let mut a = rack();
    let r = root();
    a.user_add(&r, "cert-only", None).expect("user");
    assert_eq!(a.password_hash("alice"), Ok(&b"h"[..]));
    assert_eq!(a.password_hash("ghost"), Err(EtcdError::AuthFailed));
    assert_eq!(a.password_hash("cert-only"), Err(EtcdError::NoPasswordUser));
}

#[test]
fn bootstrap_makes_root_and_enables_auth_once() {
    let mut a = AuthState::default();
    let out = a.bootstrap_root("hash".into());
    assert!(a.enabled());
    assert_eq!(a.check_admin(&root()), Ok(()));
    assert_eq!(a.role_list(&root()), Ok(vec![ROOT_ROLE.to_string()]));
    assert!(out.contains(&AuthMutation::Enabled(true)));
    assert!(matches!(out.last(), Some(AuthMutation::Revision(2))));
    assert_eq!(a.bootstrap_root("other".into()), vec![]);
    assert_eq!(a.password_hash(ROOT_USER), Ok(&b"hash"[..]));
}
