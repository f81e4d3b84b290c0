//! Parsing of the user statements: `CREATE USER`, `DROP USER`, `SET PASSWORD`, `GRANT`,
//! `REVOKE` and `SHOW GRANTS`. The grammar and the error texts are InfluxDB 1.6's (its
//! `parsePrivilege`, `parseGrantStatement`, `parseRevokeStatement`, ...), so a client sees the
//! same `found X, expected Y` messages.

use super::ast::{BinOp, Password, Privilege, Statement};
use super::error::PResult;
use super::lexer::Tok;
use super::parser::Parser;

impl Parser<'_> {
    /// A single-quoted string (a password).
    fn string(&mut self) -> PResult<String> {
        let (t, pos) = self.next();
        match t {
            Tok::Str(s) => Ok(s),
            other => Err(self.err_at(&other, pos, &["string"])),
        }
    }

    /// `READ`, `WRITE` or `ALL [PRIVILEGES]`.
    fn privilege(&mut self) -> PResult<Privilege> {
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("READ") => Ok(Privilege::Read),
            Tok::Keyword("WRITE") => Ok(Privilege::Write),
            Tok::Keyword("ALL") => {
                if self.peek_kw("PRIVILEGES") {
                    self.bump();
                }
                Ok(Privilege::All)
            }
            other => Err(self.err_at(&other, pos, &["READ", "WRITE", "ALL [PRIVILEGES]"])),
        }
    }

    /// After `CREATE USER`.
    pub(super) fn create_user(&mut self) -> PResult<Statement> {
        let name = self.ident()?;
        self.expect_kw("WITH")?;
        self.expect_kw("PASSWORD")?;
        let password = Password(self.string()?);
        let admin = if self.peek_kw("WITH") {
            self.bump();
            self.expect_kw("ALL")?;
            self.expect_kw("PRIVILEGES")?;
            true
        } else {
            false
        };
        Ok(Statement::CreateUser {
            name,
            password,
            admin,
        })
    }

    /// After `SET`: `PASSWORD FOR name = 'pw'`.
    pub(super) fn set_password(&mut self) -> PResult<Statement> {
        self.expect_kw("PASSWORD")?;
        self.expect_kw("FOR")?;
        let name = self.ident()?;
        let (t, pos) = self.next();
        if t != Tok::Op(BinOp::Eq) {
            return Err(self.err_at(&t, pos, &["="]));
        }
        let password = Password(self.string()?);
        Ok(Statement::SetPassword { name, password })
    }

    /// After `GRANT`.
    pub(super) fn grant(&mut self) -> PResult<Statement> {
        let privilege = self.privilege()?;
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("ON") => {
                let database = self.ident()?;
                self.expect_kw("TO")?;
                let user = self.ident()?;
                Ok(Statement::Grant {
                    privilege,
                    database,
                    user,
                })
            }
            Tok::Keyword("TO") if privilege == Privilege::All => Ok(Statement::GrantAdmin {
                user: self.ident()?,
            }),
            other if privilege == Privilege::All => Err(self.err_at(&other, pos, &["ON", "TO"])),
            other => Err(self.err_at(&other, pos, &["ON"])),
        }
    }

    /// After `REVOKE`.
    pub(super) fn revoke(&mut self) -> PResult<Statement> {
        let privilege = self.privilege()?;
        let (t, pos) = self.next();
        match t {
            Tok::Keyword("ON") => {
                let database = self.ident()?;
                self.expect_kw("FROM")?;
                let user = self.ident()?;
                Ok(Statement::Revoke {
                    privilege,
                    database,
                    user,
                })
            }
            Tok::Keyword("FROM") if privilege == Privilege::All => Ok(Statement::RevokeAdmin {
                user: self.ident()?,
            }),
            other if privilege == Privilege::All => Err(self.err_at(&other, pos, &["ON", "FROM"])),
            other => Err(self.err_at(&other, pos, &["ON"])),
        }
    }
}
