//! Why a statement failed: each cause a variant with the names and numbers involved. The
//! messages are influxd 1.6's where it has one (clients match on them; the differential tests
//! compare them with a real influxd), or say plainly what torc does not implement.

use crate::limits::LimitError;
use crate::users::UserError;

/// Why a statement failed; its text is the statement's `"error"` in the answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error("database name required")]
    DatabaseNameRequired,
    #[error("database not found: {name}")]
    DatabaseNotFound { name: String },
    /// The store refused or failed (its own message, e.g. a poisoned store).
    #[error(transparent)]
    Storage(#[from] crate::Error),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    User(#[from] UserError),
    /// A statement the user-statement executor was handed by mistake (a bug, not input).
    #[error("not a user statement: {0}")]
    NotUserStatement(String),
    /// A statement handed to the executor of another kind (a bug, not input).
    #[error("not a {kind} statement: {statement}")]
    Misrouted {
        kind: &'static str,
        statement: String,
    },
    #[error("retention policy duration must be at least 1h0m0s")]
    RetentionTooShort,
    #[error("DROP SERIES doesn't support time in WHERE clause")]
    DropSeriesTime,
    #[error("DELETE supports time only in top-level AND conditions")]
    DeleteTime,
    #[error("fields not supported in WHERE clause during deletion")]
    DeleteOnField,
    #[error("subqueries are supported only in SELECT")]
    SubqueryOutsideSelect,
    #[error("invalid regular expression: {0}")]
    Regex(#[source] regex::Error),
    #[error("invalid operation: time and *influxql.StringLiteral are not compatible")]
    TimeString,
    #[error("invalid time expression")]
    TimeExpression,
    #[error("undefined function {name}()")]
    UndefinedFunction { name: String },
    /// A function of InfluxQL 1.6 that torc does not implement.
    #[error("unsupported function {name}(): torc tsdb does not implement it")]
    Unimplemented { name: String },
    #[error("invalid number of arguments for {name}, expected {expected}, got {got}")]
    Arity {
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("invalid number of arguments for {name}, expected at least 2, got {got}")]
    SelectorArity { name: String, got: usize },
    #[error("selector function {name}() cannot be combined with other functions")]
    SelectorCombined { name: String },
    /// A `top()`/`bottom()` form torc does not implement.
    #[error(
        "unsupported use of top()/bottom(): torc tsdb supports only top(field[, tag ...], N) \
         beside bare fields or tags"
    )]
    SelectorForm,
    /// The last argument of `top()`/`bottom()` is not an integer (`args`: how many there are,
    /// which is what influxd prints).
    #[error("expected integer as last argument in {name}(), found {args}")]
    SelectorLimitType { name: String, args: usize },
    #[error("expected first argument to be a field in {name}(), found *")]
    SelectorFirstArgument { name: String },
    #[error("limit ({n}) in {name} function must be at least 1")]
    SelectorLimit { name: String, n: i64 },
    #[error(
        "limit ({n}) in {name} function can not be larger than the LIMIT ({limit}) in the \
         select statement"
    )]
    SelectorOverLimit {
        name: String,
        n: usize,
        limit: usize,
    },
    /// A function that needs numbers (`top()`, `mean()`, ...) over booleans or strings;
    /// `go_type` as influxd names its iterator.
    #[error("unsupported {name} iterator type: *query.{go_type}InterruptIterator")]
    SelectorType { name: String, go_type: &'static str },
    #[error("mixing aggregate and non-aggregate queries is not supported")]
    MixedAggregate,
    #[error("aggregate function distinct() cannot be combined with other functions or fields")]
    DistinctCombined,
    #[error("distinct function {}", if *many { "can only have one argument" } else { "requires at least one argument" })]
    DistinctArity { many: bool },
    #[error("mixing multiple selector functions with tags or fields is not supported")]
    SelectorsWithFields,
    #[error("aggregate function required inside the call to {name}")]
    TransformWithoutAggregate { name: String },
    #[error("{name} aggregate requires a GROUP BY interval")]
    TransformWithoutInterval { name: String },
    #[error("GROUP BY requires at least one aggregate function")]
    GroupByWithoutAggregate,
    #[error("at least 1 non-time field must be queried")]
    NoField,
    #[error("derivative cannot be combined with other functions")]
    TransformCombined,
    #[error("expected field argument in {name}()")]
    FieldArgument { name: String },
    #[error("second argument to elapsed must be a duration, got *influxql.{got}")]
    ElapsedUnit { got: &'static str },
    #[error("moving_average window must be greater than 1, got {n}")]
    MovingAverageWindow { n: i64 },
    #[error("second argument to {name} must be a duration")]
    TransformUnit { name: String },
    #[error("expected float argument in percentile()")]
    PercentileArgument,
    /// With both limits off, a bucket count that cannot be allocated.
    #[error(
        "{count} GROUP BY time buckets do not fit in memory: bound the time range, or set \
         max-select-buckets"
    )]
    BucketsTooMany { count: usize },
}

/// What an execution step returns.
pub(crate) type ExecResult<T> = Result<T, QueryError>;

impl QueryError {
    /// A storage error as InfluxQL reports it: a missing database by its bare name.
    pub(crate) fn from_storage(e: crate::Error) -> QueryError {
        match e {
            crate::Error::DatabaseNotFound(name) => QueryError::DatabaseNotFound { name },
            e => QueryError::Storage(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::QueryError;
    use crate::limits::LimitError;
    use crate::{Options, Tsdb, exec, influxql};

    #[tokio::test]
    async fn a_failed_statement_carries_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let db = Tsdb::open(dir.path(), Options::default()).unwrap();
        db.create_database("d").unwrap();
        let run = |q: &'static str| {
            let db = &db;
            async move {
                let stmts = influxql::parse_query(q).unwrap();
                let mut results = exec::execute(db, &stmts, Some("d")).await;
                results.remove(0).error.expect("the statement fails")
            }
        };
        let e = run("SELECT foo(v) FROM m").await;
        assert!(
            matches!(&e, QueryError::UndefinedFunction { name } if name == "foo"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "undefined function foo()");
        let e = run("SELECT v FROM nowhere..m").await;
        assert!(
            matches!(&e, QueryError::DatabaseNotFound { name } if name == "nowhere"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "database not found: nowhere");
        let e = run("CREATE RETENTION POLICY r ON d DURATION 1m REPLICATION 1").await;
        assert!(matches!(e, QueryError::RetentionTooShort), "{e:?}");
        let e = run("SELECT top(v, 0) FROM m").await;
        assert!(
            matches!(&e, QueryError::SelectorLimit { n: 0, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "limit (0) in top function must be at least 1"
        );
        let limit: QueryError = LimitError::Points {
            count: 11,
            limit: 10,
        }
        .into();
        assert_eq!(limit.to_string(), "max-select-point limit exceeed: (11/10)");
    }
}
