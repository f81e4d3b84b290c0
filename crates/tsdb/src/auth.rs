//! Authentication and authorization of requests, as influxd 1.6 does them with
//! `[http] auth-enabled = true` (its `services/httpd/handler.go` and `services/meta`).
//!
//! Authentication ([`authenticate`]), only once some user is an admin (before that requests
//! pass unauthenticated, so that the first admin can be created): credentials come from the
//! URL's `u` and `p` (both non-empty), else from the `Authorization` header: `Bearer ...`
//! (influxd answers `bearer auth disabld` without a shared secret, and so does torc),
//! `Token user:password` (InfluxDB 1.8's form; 1.6 refuses it, torc accepts it) or HTTP Basic.
//! Failures are 401 with `WWW-Authenticate: Basic realm="InfluxDB"`: `unable to parse
//! authentication credentials`, `username required`, `authorization failed` (also for an
//! unknown user).
//!
//! Authorization ([`authorize_query`], [`authorize_write`]): with no users at all only a query
//! whose first statement is `CREATE USER ... WITH ALL PRIVILEGES` may run; admins may run
//! anything; other users need the privileges of [`Statement::required`] (403,
//! `error authorizing query: bob not authorized to execute statement '...', requires READ on
//! db`), and `/write` needs WRITE on the database. `SHOW DATABASES` lists only the databases
//! the user may read or write; `/ping` is open.
//!
//! Password checks cost a bcrypt computation, bounded and cached by [`crate::password`]; a
//! request refused because too many are in flight is a 503.
//! TODO-security: as in influxd, an unknown user is refused without a bcrypt check, so
//! response times tell which user names exist.

use base64::Engine as _;

use crate::form::parse_form;
use crate::influxql::{Privilege, Required, Statement};
use crate::password::AuthError;
use crate::storage::Tsdb;
use crate::users::User;

impl Tsdb {
    /// The user named `name` if `password` is theirs; `None` for a wrong password or an
    /// unknown user.
    pub async fn authenticate(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<User>, AuthError> {
        let Some((user, hash)) = self.user_hash(name) else {
            return Ok(None);
        };
        Ok(self
            .authn
            .verify(name, &hash, password)
            .await?
            .then_some(user))
    }
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is disabled: everything is allowed.
    Open,
    /// Authentication is enabled but no admin exists, so the request was not authenticated.
    Anonymous,
    /// An authenticated user, as the catalog had it when the request came in.
    User(User),
}

/// Credentials found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Password {
        user: String,
        password: String,
    },
    /// A JWT (influxd checks it against a shared secret; torc has none).
    Bearer,
}

/// Why a request is refused before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401 with this text.
    Unauthenticated(&'static str),
    /// 503: too many password checks in flight.
    Busy,
}

/// The credentials of a request, in influxd's precedence: `u` and `p` from the URL query (the
/// first of each, both non-empty), then the `Authorization` header.
pub fn credentials(query: &str, authorization: Option<&[u8]>) -> Option<Credentials> {
    let params = parse_form(query);
    if let (Some(u), Some(p)) = (params.get("u"), params.get("p"))
        && !u.is_empty()
        && !p.is_empty()
    {
        return Some(Credentials::Password {
            user: u.clone(),
            password: p.clone(),
        });
    }
    let header = std::str::from_utf8(authorization?)
        .ok()
        .filter(|h| !h.is_empty())?;
    let parts: Vec<&str> = header.split(' ').collect();
    if let [scheme, value] = parts[..] {
        match scheme {
            "Bearer" => return Some(Credentials::Bearer),
            "Token" => {
                if let Some((user, password)) = value.split_once(':') {
                    return Some(Credentials::Password {
                        user: user.into(),
                        password: password.into(),
                    });
                }
            }
            _ => {}
        }
    }
    // HTTP Basic (the scheme name in any case, as Go's `BasicAuth`).
    let prefix = header
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&header[prefix.len()..])
        .ok()?;
    let decoded = String::from_utf8_lossy(&decoded);
    let (user, password) = decoded.split_once(':')?;
    Some(Credentials::Password {
        user: user.into(),
        password: password.into(),
    })
}

/// Authenticates a 1.x request (`/query`, `/write`).
pub async fn authenticate(
    db: &Tsdb,
    query: &str,
    authorization: Option<&[u8]>,
) -> Result<Caller, Denied> {
    if !db.options().auth_enabled {
        return Ok(Caller::Open);
    }
    if !db.admin_exists() {
        return Ok(Caller::Anonymous);
    }
    match credentials(query, authorization) {
        None => Err(Denied::Unauthenticated(
            "unable to parse authentication credentials",
        )),
        Some(Credentials::Bearer) => Err(Denied::Unauthenticated("bearer auth disabld")),
        Some(Credentials::Password { user, .. }) if user.is_empty() => {
            Err(Denied::Unauthenticated("username required"))
        }
        Some(Credentials::Password { user, password }) => {
            match db.authenticate(&user, &password).await {
                Ok(Some(u)) => Ok(Caller::User(u)),
                Ok(None) => {
                    tracing::debug!(%user, "authentication failed");
                    Err(Denied::Unauthenticated("authorization failed"))
                }
                Err(_) => Err(Denied::Busy),
            }
        }
    }
}

/// Why a caller may not run a query; the text is what follows `error authorizing query: `
/// (influxd's). `statement` is the statement as InfluxQL, passwords redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryDenied {
    #[error("create admin user first or disable authentication")]
    NoAdminYet,
    #[error("no user provided")]
    NoUser,
    #[error("{user} not authorized to execute statement '{statement}', requires admin privilege")]
    NeedsAdmin { user: String, statement: String },
    #[error(
        "{user} not authorized to execute statement '{statement}', requires {privilege} on \
         {database}"
    )]
    NeedsPrivilege {
        user: String,
        statement: String,
        privilege: Privilege,
        database: String,
    },
}

/// Why a caller may not write to a database (the 403 text, influxd's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteDenied {
    #[error("user is required to write to database {database:?}")]
    NoUser { database: String },
    #[error("{user:?} user is not authorized to write to database {database:?}")]
    NotAuthorized { user: String, database: String },
}

/// Whether `caller` may run `stmts` (with `default_db` as the request's `db`). `user_count` is
/// the number of users.
pub fn authorize_query(
    caller: &Caller,
    user_count: usize,
    stmts: &[Statement],
    default_db: &str,
) -> Result<(), QueryDenied> {
    if *caller == Caller::Open {
        return Ok(());
    }
    if user_count == 0 {
        return match stmts.first() {
            Some(Statement::CreateUser { admin: true, .. }) => Ok(()),
            _ => Err(QueryDenied::NoAdminYet),
        };
    }
    let Caller::User(user) = caller else {
        return Err(QueryDenied::NoUser);
    };
    if user.admin {
        return Ok(());
    }
    for stmt in stmts {
        for req in stmt.required() {
            match req {
                Required::Admin => {
                    return Err(QueryDenied::NeedsAdmin {
                        user: user.name.clone(),
                        statement: stmt.to_string(),
                    });
                }
                Required::On {
                    privilege,
                    database,
                } => {
                    let db = if database.is_empty() {
                        default_db
                    } else {
                        &database
                    };
                    if !user.may(privilege, db) {
                        return Err(QueryDenied::NeedsPrivilege {
                            user: user.name.clone(),
                            statement: stmt.to_string(),
                            privilege,
                            database: db.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether `caller` may write to `db`.
pub fn authorize_write(caller: &Caller, db: &str) -> Result<(), WriteDenied> {
    match caller {
        Caller::Open => Ok(()),
        Caller::Anonymous => Err(WriteDenied::NoUser {
            database: db.to_string(),
        }),
        Caller::User(u) if u.may(Privilege::Write, db) => Ok(()),
        Caller::User(u) => Err(WriteDenied::NotAuthorized {
            user: u.name.clone(),
            database: db.to_string(),
        }),
    }
}

/// Whether `caller` sees `db` in `SHOW DATABASES` (it may read or write it).
pub fn lists_database(caller: &Caller, db: &str) -> bool {
    match caller {
        Caller::User(u) => u.may(Privilege::Read, db) || u.may(Privilege::Write, db),
        Caller::Open | Caller::Anonymous => true,
    }
}

/// A 0.8 `Authorization` header that 0.8 could not read (its 400 texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Not two words.
    #[error("Bad auth header")]
    Header,
    /// The second word is not base64.
    #[error("Bad encoding")]
    Encoding,
    /// Not `user:password`.
    #[error("Bad auth value")]
    Value,
}

/// The 0.8 API's credentials, parsed as InfluxDB 0.8 did (`getUsernameAndPassword`): `u` and
/// `p` from the URL query, else `Authorization: <anything> <base64 of user:password>`. `Ok(None)`
/// means none were given.
pub fn v08_credentials(
    query: &str,
    authorization: Option<&[u8]>,
) -> Result<Option<(String, String)>, CredentialsError> {
    let params = parse_form(query);
    if let (Some(u), Some(p)) = (params.get("u"), params.get("p"))
        && !u.is_empty()
        && !p.is_empty()
    {
        return Ok(Some((u.clone(), p.clone())));
    }
    let Some(header) = authorization.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let header = String::from_utf8_lossy(header);
    let fields: Vec<&str> = header.split(' ').collect();
    let [_, value] = fields[..] else {
        return Err(CredentialsError::Header);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| CredentialsError::Encoding)?;
    let decoded = String::from_utf8_lossy(&decoded);
    match decoded.split(':').collect::<Vec<_>>()[..] {
        [u, p] => Ok(Some((u.to_string(), p.to_string()))),
        _ => Err(CredentialsError::Value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influxql::parse_query;

    fn user(admin: bool, privileges: &[(&str, Privilege)]) -> Caller {
        Caller::User(User {
            name: "bob".into(),
            admin,
            privileges: privileges
                .iter()
                .map(|(d, p)| (d.to_string(), *p))
                .collect(),
        })
    }

    /// The denial's text, which clients see; `None` when the query may run.
    fn check(caller: &Caller, q: &str, db: &str) -> Option<String> {
        authorize_query(caller, 2, &parse_query(q).unwrap(), db)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn bootstrap_allows_only_creating_an_admin_first() {
        let create =
            parse_query("CREATE USER a WITH PASSWORD 'x' WITH ALL PRIVILEGES; SHOW USERS").unwrap();
        assert_eq!(authorize_query(&Caller::Anonymous, 0, &create, ""), Ok(()));
        let plain = parse_query("CREATE USER a WITH PASSWORD 'x'").unwrap();
        let msg = "create admin user first or disable authentication";
        assert_eq!(
            authorize_query(&Caller::Anonymous, 0, &plain, "").map_err(|e| e.to_string()),
            Err(msg.into())
        );
        let later =
            parse_query("SHOW USERS; CREATE USER a WITH PASSWORD 'x' WITH ALL PRIVILEGES").unwrap();
        assert_eq!(
            authorize_query(&Caller::Anonymous, 0, &later, ""),
            Err(QueryDenied::NoAdminYet)
        );
        // Users but no admin: nobody is authenticated, so nothing runs.
        assert_eq!(
            authorize_query(&Caller::Anonymous, 1, &create, "").map_err(|e| e.to_string()),
            Err("no user provided".into())
        );
        assert_eq!(authorize_query(&Caller::Open, 0, &plain, ""), Ok(()));
    }

    #[test]
    fn admins_may_run_anything() {
        let admin = user(true, &[]);
        for q in [
            "DROP DATABASE x",
            "SHOW USERS",
            "SELECT * FROM m",
            "DELETE FROM m",
        ] {
            assert_eq!(check(&admin, q, "x"), None, "{q}");
        }
    }

    #[test]
    fn reads_need_read_and_writes_need_write() {
        let reader = user(false, &[("x", Privilege::Read)]);
        assert_eq!(check(&reader, "SELECT v FROM m", "x"), None);
        assert_eq!(check(&reader, "SHOW MEASUREMENTS", "x"), None);
        assert_eq!(check(&reader, "SELECT v FROM x..m", "y"), None);
        assert_eq!(
            check(&reader, "SELECT v FROM m", "y"),
            Some(
                "bob not authorized to execute statement 'SELECT v FROM m', requires READ on y"
                    .into()
            )
        );
        assert_eq!(
            check(&reader, "DELETE FROM m", "x"),
            Some(
                "bob not authorized to execute statement 'DELETE FROM m', requires WRITE on x"
                    .into()
            )
        );
        // A subquery's sources count; the first unmet requirement is reported.
        assert_eq!(
            check(&reader, "SELECT * FROM (SELECT v FROM y..m)", "x"),
            Some("bob not authorized to execute statement 'SELECT * FROM (SELECT v FROM y..m)', requires READ on y".into())
        );
        let writer = user(false, &[("x", Privilege::Write)]);
        assert_eq!(check(&writer, "DROP SERIES FROM m", "x"), None);
        assert_eq!(check(&writer, "DROP RETENTION POLICY r ON x", ""), None);
        assert!(check(&writer, "SELECT v FROM m", "x").is_some());
        let all = user(false, &[("x", Privilege::All)]);
        assert_eq!(check(&all, "SELECT v FROM m; DELETE FROM m", "x"), None);
        let none = user(false, &[("x", Privilege::None)]);
        assert!(check(&none, "SELECT v FROM m", "x").is_some());
        // SHOW DATABASES needs nothing; its answer is filtered.
        assert_eq!(check(&none, "SHOW DATABASES", ""), None);
        assert!(lists_database(&reader, "x") && !lists_database(&reader, "y"));
        assert!(lists_database(&writer, "x") && !lists_database(&none, "x"));
    }

    #[test]
    fn schema_and_user_statements_need_an_admin() {
        let all = user(false, &[("x", Privilege::All)]);
        for (q, shown) in [
            ("CREATE DATABASE x", "CREATE DATABASE x"),
            ("SHOW USERS", "SHOW USERS"),
            ("DROP MEASUREMENT m", "DROP MEASUREMENT m"),
            (
                "CREATE USER \"a b\" WITH PASSWORD 'secret'",
                "CREATE USER \"a b\" WITH PASSWORD [REDACTED]",
            ),
            (
                "SET PASSWORD FOR bob = 'secret'",
                "SET PASSWORD FOR bob = [REDACTED]",
            ),
            ("GRANT ALL ON x TO bob", "GRANT ALL PRIVILEGES ON x TO bob"),
            ("REVOKE ALL FROM bob", "REVOKE ALL PRIVILEGES FROM bob"),
        ] {
            assert_eq!(
                check(&all, q, "x"),
                Some(format!(
                    "bob not authorized to execute statement '{shown}', requires admin privilege"
                )),
                "{q}"
            );
        }
    }

    #[test]
    fn writes_need_write() {
        assert_eq!(authorize_write(&Caller::Open, "x"), Ok(()));
        let denied = |caller: &Caller| authorize_write(caller, "x").map_err(|e| e.to_string());
        assert_eq!(
            denied(&Caller::Anonymous),
            Err("user is required to write to database \"x\"".into())
        );
        assert_eq!(
            denied(&user(false, &[("x", Privilege::Read)])),
            Err("\"bob\" user is not authorized to write to database \"x\"".into())
        );
        assert_eq!(
            authorize_write(&user(false, &[("x", Privilege::Read)]), "x"),
            Err(WriteDenied::NotAuthorized {
                user: "bob".into(),
                database: "x".into()
            })
        );
        assert_eq!(
            authorize_write(&user(false, &[("x", Privilege::All)]), "x"),
            Ok(())
        );
        assert_eq!(authorize_write(&user(true, &[]), "y"), Ok(()));
    }

    #[test]
    fn credentials_in_influxd_precedence() {
        let pw = |u: &str, p: &str| {
            Some(Credentials::Password {
                user: u.into(),
                password: p.into(),
            })
        };
        // "bob:pw" and "bob:" in base64.
        let basic = b"Basic Ym9iOnB3".as_slice();
        assert_eq!(credentials("u=a&p=b", Some(basic)), pw("a", "b"));
        assert_eq!(credentials("u=a&p=b&u=c", None), pw("a", "b"));
        assert_eq!(credentials("u=a", Some(basic)), pw("bob", "pw"));
        assert_eq!(credentials("", Some(b"basic Ym9iOnB3")), pw("bob", "pw"));
        assert_eq!(credentials("", Some(b"Basic Ym9iOg==")), pw("bob", ""));
        assert_eq!(credentials("", Some(b"Token bob:p:w")), pw("bob", "p:w"));
        assert_eq!(
            credentials("", Some(b"Bearer x.y.z")),
            Some(Credentials::Bearer)
        );
        assert_eq!(credentials("", Some(b"Basic !!")), None);
        assert_eq!(credentials("", Some(b"Token bob")), None);
        assert_eq!(credentials("u=a&p=", None), None);
        assert_eq!(credentials("", None), None);
    }

    #[test]
    fn v08_credentials_as_08_parsed_them() {
        assert_eq!(
            v08_credentials("u=a&p=b", None),
            Ok(Some(("a".into(), "b".into())))
        );
        assert_eq!(v08_credentials("", None), Ok(None));
        assert_eq!(
            v08_credentials("", Some(b"Basic Ym9iOnB3")),
            Ok(Some(("bob".into(), "pw".into())))
        );
        assert_eq!(
            v08_credentials("", Some(b"Basic")),
            Err(CredentialsError::Header)
        );
        assert_eq!(
            v08_credentials("", Some(b"Basic !!")),
            Err(CredentialsError::Encoding)
        );
        // "a:b:c"
        assert_eq!(
            v08_credentials("", Some(b"Basic YTpiOmM=")),
            Err(CredentialsError::Value)
        );
    }
}
