//! Parsing of the statements that change the schema: `CREATE`/`ALTER`/`DROP` of databases,
//! retention policies, measurements and series, and `DELETE`; the dispatch on a statement's
//! first keyword (`statement`). User statements are in `users`, `SHOW` in `show`, `SELECT` in
//! `select`. It checks syntax only: whether a database or policy exists is the executor's.

use super::ast::Statement;
use super::error::PResult;
use super::lexer::Tok;
use super::parser::Parser;

impl Parser<'_> {
    pub(super) fn statement(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("SELECT") => Ok(Statement::Select(Box::new(self.select()?))),
            Tok::Keyword("SHOW") => self.show(),
            Tok::Keyword("CREATE") => self.create(),
            Tok::Keyword("ALTER") => self.alter_retention_policy(),
            Tok::Keyword("DELETE") => {
                let (sources, condition) = self.sources_or_condition()?;
                Ok(Statement::Delete { sources, condition })
            }
            Tok::Keyword("GRANT") => self.grant(),
            Tok::Keyword("REVOKE") => self.revoke(),
            Tok::Keyword("SET") => self.set_password(),
            Tok::Keyword("DROP") => {
                let (t, pos) = self.next();
                match t {
                    Tok::Keyword("DATABASE") => Ok(Statement::DropDatabase {
                        name: self.ident()?,
                    }),
                    Tok::Keyword("SERIES") => {
                        let (sources, condition) = self.sources_or_condition()?;
                        Ok(Statement::DropSeries { sources, condition })
                    }
                    Tok::Keyword("MEASUREMENT") => Ok(Statement::DropMeasurement {
                        name: self.ident()?,
                    }),
                    Tok::Keyword("RETENTION") => {
                        let (name, database) = self.policy_on()?;
                        Ok(Statement::DropRetentionPolicy { name, database })
                    }
                    Tok::Keyword("CONTINUOUS") => self.drop_continuous_query(),
                    Tok::Keyword("USER") => Ok(Statement::DropUser {
                        name: self.ident()?,
                    }),
                    other => Err(self.err_at(
                        &other,
                        pos,
                        &[
                            "CONTINUOUS",
                            "MEASUREMENT",
                            "RETENTION",
                            "SERIES",
                            "SHARD",
                            "SUBSCRIPTION",
                            "USER",
                        ],
                    )),
                }
            }
            other => Err(self.err_at(
                &other,
                pos,
                &[
                    "SELECT", "DELETE", "SHOW", "CREATE", "DROP", "EXPLAIN", "GRANT", "REVOKE",
                    "ALTER", "SET", "KILL",
                ],
            )),
        }
    }

    pub(super) fn create(&mut self) -> PResult<Statement> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("DATABASE") => Ok(Statement::CreateDatabase {
                name: self.ident()?,
            }),
            Tok::Keyword("USER") => self.create_user(),
            Tok::Keyword("CONTINUOUS") => self.create_continuous_query(),
            Tok::Keyword("RETENTION") => {
                let (name, database) = self.policy_on()?;
                self.expect_kw("DURATION")?;
                let duration = self.duration_or_inf()?;
                self.expect_kw("REPLICATION")?;
                let (t, pos) = self.next();
                let replication = match t {
                    Tok::Int(n) if n >= 1 => n,
                    other => return Err(self.err_at(&other, pos, &["integer"])),
                };
                let mut shard_duration = None;
                let mut default = false;
                loop {
                    if self.peek_kw("SHARD") {
                        self.bump();
                        self.expect_kw("DURATION")?;
                        shard_duration = Some(self.duration_or_inf()?);
                    } else if self.peek_kw("DEFAULT") {
                        self.bump();
                        default = true;
                    } else {
                        break;
                    }
                }
                Ok(Statement::CreateRetentionPolicy {
                    name,
                    database,
                    duration,
                    replication,
                    shard_duration,
                    default,
                })
            }
            other => Err(self.err_at(
                &other,
                pos,
                &[
                    "CONTINUOUS",
                    "DATABASE",
                    "USER",
                    "RETENTION",
                    "SUBSCRIPTION",
                ],
            )),
        }
    }

    /// `ALTER RETENTION POLICY name ON db` and at least one of `DURATION`, `REPLICATION`,
    /// `SHARD DURATION`, `DEFAULT`.
    fn alter_retention_policy(&mut self) -> PResult<Statement> {
        self.expect_kw("RETENTION")?;
        let (name, database) = self.policy_on()?;
        let (mut duration, mut replication, mut shard_duration) = (None, None, None);
        let mut default = false;
        let mut any = false;
        loop {
            let (t, pos) = self.peek();
            match t {
                Tok::Keyword("DURATION") => {
                    self.bump();
                    duration = Some(self.duration_or_inf()?);
                }
                Tok::Keyword("REPLICATION") => {
                    self.bump();
                    let (t, pos) = self.next();
                    replication = Some(match t {
                        Tok::Int(n) if n >= 1 => n,
                        other => return Err(self.err_at(&other, pos, &["integer"])),
                    });
                }
                Tok::Keyword("SHARD") => {
                    self.bump();
                    self.expect_kw("DURATION")?;
                    shard_duration = Some(self.duration_or_inf()?);
                }
                Tok::Keyword("DEFAULT") => {
                    self.bump();
                    default = true;
                }
                other if !any => {
                    self.bump();
                    return Err(self.err_at(
                        &other,
                        pos,
                        &["DURATION", "REPLICATION", "SHARD", "DEFAULT"],
                    ));
                }
                _ => break,
            }
            any = true;
        }
        Ok(Statement::AlterRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        })
    }
}
