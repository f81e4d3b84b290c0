//! The UI's query page: an InfluxQL query run on the rack's time-series database (the running
//! `influxdb` service, 1.x or the seed's 0.8 API) and its JSON answer streamed back
//! (`GET /api/v1/query`). The controller logs in as the rack config's `access.influxdb` user,
//! so a caller who is not an admin may only run what is plainly a read.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};

use super::access::CallerExt;
use super::error::{ApiError, bad_gateway};
use super::extract::Query;
use super::proxy::{forward_error, service_endpoint};
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new().route("/api/v1/query", get(tsdb_query))
}

#[derive(serde::Deserialize)]
struct TsdbQuery {
    q: String,
    #[serde(default = "default_db")]
    db: String,
    #[serde(default)]
    api: QueryApi,
}

/// Which of InfluxDB's HTTP APIs a query goes to.
#[derive(serde::Deserialize, Clone, Copy, PartialEq, Eq, Default)]
enum QueryApi {
    /// The seed's API: `/db/<db>/series`.
    #[serde(rename = "0.8")]
    V08,
    /// `/query`.
    #[default]
    #[serde(rename = "1.x")]
    V1,
}

fn default_db() -> String {
    "torc".into()
}

/// Runs a query on the rack's time-series database (the running `influxdb` service) and passes
/// its JSON answer on, for the UI's query page.
async fn tsdb_query(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    Query(q): Query<TsdbQuery>,
) -> Result<Response, ApiError> {
    if !caller.who.is_admin()
        && let Some(why) = not_plainly_a_read(&q.q, q.api == QueryApi::V08)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may only run one SELECT or SHOW (LIST on the 0.8 API) through the controller, and this query is not plainly one: {why}; an admin may run it",
                caller.who.describe()
            ),
        ));
    }
    let db = plain_db_name(&q.db)?;
    let (addr, tls) = service_endpoint(&ctl, "influxdb", 8086)?;
    let scheme = if tls { "https" } else { "http" };
    // The controller logs in as the config's `access.influxdb` user (0.8's default `root`
    // otherwise, which a database without authentication ignores).
    let (user, password) = ctl.login(|s| s.influxdb_login.clone());
    let (user, password) = (
        user.unwrap_or_else(|| "root".into()),
        password.unwrap_or_else(|| "root".into()),
    );
    // Credentials go in the Authorization header, never in the URL, which errors quote.
    let req = match q.api {
        QueryApi::V08 => ctl
            .http
            .get(format!("{scheme}://{addr}/db/{db}/series"))
            .basic_auth(&user, Some(&password))
            .query(&[("q", q.q.as_str())]),
        QueryApi::V1 => ctl
            .http
            .get(format!("{scheme}://{addr}/query"))
            .basic_auth(&user, Some(&password))
            .query(&[("q", q.q.as_str()), ("db", db), ("epoch", "ms")]),
    };
    let who = format!("influxdb at {addr}");
    let resp = req
        .send()
        .await
        .map_err(|e| bad_gateway(format!("{who} did not answer: {}", e.without_url())))?;
    if !resp.status().is_success() {
        // The database's own words (a parse error, a refusal), as ours.
        return Err(forward_error(resp, &who).await);
    }
    // The answer goes through as it comes, never held whole: a big answer costs the
    // controller a chunk at a time. A statement's error in a 1.x answer stays inside it
    // (`results[i].error`), as InfluxDB sends it.
    let mut out = Response::new(axum::body::Body::from_stream(resp.bytes_stream()));
    out.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(out)
}

/// Why a non-admin may not run `text` through the query proxy, if they may not.
///
/// The proxy logs in to the database as its admin, so for everyone else it admits only what
/// is plainly a read, and is conservative about it rather than a second InfluxQL lexer (the
/// database's own is the judge of what a statement means): one statement, starting with
/// SELECT or SHOW (0.8's SELECT or LIST), without the word INTO (SELECT ... INTO writes), and
/// without comments (which could hide a statement boundary from a check this simple).
fn not_plainly_a_read(text: &str, api_08: bool) -> Option<String> {
    let mut body = text.trim();
    if let Some(stripped) = body.strip_suffix(';') {
        body = stripped.trim_end();
    }
    if body.contains(';') {
        return Some("it holds more than one statement".into());
    }
    if body.contains("--") || body.contains("/*") {
        return Some("it holds a comment".into());
    }
    let words: Vec<String> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    let reads: &[&str] = if api_08 {
        &["SELECT", "LIST"]
    } else {
        &["SELECT", "SHOW"]
    };
    if !reads.contains(&first) || !body.to_ascii_uppercase().starts_with(first) {
        return Some(format!("it does not start with {}", reads.join(" or ")));
    }
    if words.iter().any(|w| w == "INTO") {
        return Some("SELECT ... INTO writes".into());
    }
    None
}

/// A database name the proxy may put in a path or a parameter: letters, digits, `_`, `-`, `.`.
fn plain_db_name(db: &str) -> Result<&str, ApiError> {
    let ok = !db.is_empty()
        && db.len() <= 255
        && db != "."
        && db != ".."
        && db
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(db)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("db: {db:?} is not a database name (letters, digits, '_', '-', '.')"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::not_plainly_a_read as refused;

    #[test]
    fn only_plain_reads_pass_the_query_proxy() {
        for read in [
            "SELECT * FROM machine",
            "  select mean(x) from m;",
            "select * from machine where hostname = 'bladerunner1' limit 1000",
            "SHOW MEASUREMENTS",
            "SELECT * FROM /^cpu/ WHERE host =~ /web/",
        ] {
            assert_eq!(refused(read, false), None, "{read:?}");
        }
        assert_eq!(refused("list series", true), None);
        for write in [
            "DROP DATABASE torc",
            "select * from m; drop measurement m",
            "SHOW DATABASES; SELECT * FROM /--/; CREATE USER m WITH PASSWORD 'p' WITH ALL PRIVILEGES",
            "SELECT * FROM /'/; CREATE DATABASE x; SELECT * FROM /'/",
            "SELECT mean(x) INTO other FROM m",
            "-- a comment\nDROP DATABASE torc",
            "/* x */ SELECT 1",
            "(drop database torc)",
            "delete from machine",
            "",
            // Conservative: a ';' even inside a string is refused to non-admins.
            "select * from machine where hostname = 'a;drop' limit 1",
        ] {
            assert!(refused(write, false).is_some(), "{write:?}");
        }
        assert!(refused("delete from machine", true).is_some());
        assert!(
            refused("show databases", true).is_some(),
            "0.8 has LIST, not SHOW"
        );
    }

    #[test]
    fn database_names_stay_names() {
        for ok in ["torc", "my_db-1", "a.b"] {
            assert!(super::plain_db_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../../query?q=x", "a/b", "a b", "a%2f"] {
            assert!(super::plain_db_name(bad).is_err(), "{bad}");
        }
    }
}
