//! Catalog changes: databases, retention policies and continuous queries listed, created,
//! altered and dropped (a drop of data is logged in the WAL, kinds 2 and 4, before its data
//! goes; a database's continuous queries go with it).
//! What it does not do: users (see [`crate::users`]) or deleting series (see
//! [`super::delete`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::meta::{CqMeta, DbMeta, RpMeta, shard_group_for};
use super::tsdb::Tsdb;
use crate::Error;
use crate::encoding::put_chunk;
use crate::names::{self, NameKind, dir_name};

impl Tsdb {
    pub fn databases(&self) -> Vec<String> {
        self.meta
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .databases
            .keys()
            .cloned()
            .collect()
    }

    pub fn database(&self, name: &str) -> Option<DbMeta> {
        self.meta
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .databases
            .get(name)
            .cloned()
    }

    /// `CREATE DATABASE` (idempotent, like InfluxDB).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        if name.is_empty() {
            return Err(Error::DatabaseNameRequired);
        }
        self.update_meta(|next| {
            if next.databases.contains_key(name) {
                return Ok(false);
            }
            names::check_name(NameKind::Database, name)?;
            let mut rps = BTreeMap::new();
            rps.insert(
                "autogen".to_string(),
                RpMeta {
                    duration_ns: 0,
                    shard_group_ns: shard_group_for(0),
                    replication: 1,
                },
            );
            next.databases.insert(
                name.to_string(),
                DbMeta {
                    default_rp: "autogen".into(),
                    rps,
                    continuous_queries: Vec::new(),
                },
            );
            Ok(true)
        })?;
        Ok(())
    }

    /// `CREATE RETENTION POLICY`.
    pub fn create_retention_policy(
        &self,
        db: &str,
        name: &str,
        rp: RpMeta,
        default: bool,
    ) -> Result<(), Error> {
        self.check_poison()?;
        self.update_meta(|next| {
            let d = next.database_mut(db)?;
            if let Some(existing) = d.rps.get(name)
                && *existing != rp
            {
                return Err(Error::RetentionPolicyExists);
            }
            if !d.rps.contains_key(name) {
                names::check_name(NameKind::RetentionPolicy, name)?;
            }
            d.rps.insert(name.to_string(), rp);
            if default {
                d.default_rp = name.to_string();
            }
            Ok(true)
        })?;
        Ok(())
    }

    /// `ALTER RETENTION POLICY`: changes the options given (a new duration takes effect at the
    /// next retention sweep).
    pub fn alter_retention_policy(
        &self,
        db: &str,
        name: &str,
        change: impl FnOnce(&mut RpMeta),
        default: bool,
    ) -> Result<(), Error> {
        self.check_poison()?;
        self.update_meta(|next| {
            let d = next.database_mut(db)?;
            let rp = d
                .rps
                .get_mut(name)
                .ok_or_else(|| Error::RetentionPolicyNotFound(name.to_string()))?;
            change(rp);
            if default {
                d.default_rp = name.to_string();
            }
            Ok(true)
        })?;
        Ok(())
    }

    /// `DROP RETENTION POLICY` (idempotent): its data goes with it. Logged (WAL kind 4) so that a
    /// replay does not bring back points written before the drop into a policy of the same
    /// name created after it.
    pub async fn drop_retention_policy(&self, db: &str, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        // The flush lock keeps a flush from writing a segment into the directory removed here.
        let _f = self.flush_lock.lock().await;
        let _g = self.gate.write().await;
        // Like InfluxDB 1.6, dropping what does not exist (even the database) is no error.
        let dropped = self.update_meta(|next| {
            Ok(next
                .databases
                .get_mut(db)
                .is_some_and(|d| d.rps.remove(name).is_some()))
        })?;
        if !dropped {
            return Ok(());
        }
        let mut rec = vec![4u8];
        put_chunk(&mut rec, db.as_bytes());
        put_chunk(&mut rec, name.as_bytes());
        if let Err(e) = self.wal.append(&rec).await {
            self.poison(&e);
            return Err(e);
        }
        let shard = self
            .shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(db.to_string(), name.to_string()));
        if let Some(s) = shard {
            let n = s.read().index.series.len();
            s.db_series.fetch_sub(n, Ordering::Relaxed);
        }
        let p = self
            .dir
            .join("data")
            .join(dir_name(db))
            .join(dir_name(name));
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io("removing retention policy", e))?;
        }
        Ok(())
    }

    /// Every stored continuous query with its database (databases sorted, each one's queries
    /// in creation order).
    pub fn continuous_queries(&self) -> Vec<(String, CqMeta)> {
        self.meta()
            .databases
            .iter()
            .flat_map(|(d, m)| m.continuous_queries.iter().map(|q| (d.clone(), q.clone())))
            .collect()
    }

    /// `CREATE CONTINUOUS QUERY` with its (normalized) text: nothing changes when the query
    /// exists with the same text (compared ignoring case, as influxd does); another text is
    /// refused.
    pub fn create_continuous_query(&self, db: &str, name: &str, query: &str) -> Result<(), Error> {
        self.check_poison()?;
        self.update_meta(|next| {
            let d = next.database_mut(db)?;
            if let Some(cq) = d.continuous_queries.iter().find(|c| c.name == name) {
                if cq.query.to_lowercase() == query.to_lowercase() {
                    return Ok(false);
                }
                return Err(Error::ContinuousQueryExists);
            }
            d.continuous_queries.push(CqMeta {
                name: name.to_string(),
                query: query.to_string(),
            });
            Ok(true)
        })?;
        Ok(())
    }

    /// `DROP CONTINUOUS QUERY` (idempotent, like influxd 1.6: an unknown query or database is
    /// no error).
    pub fn drop_continuous_query(&self, db: &str, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        self.update_meta(|next| {
            let Some(d) = next.databases.get_mut(db) else {
                return Ok(false);
            };
            let before = d.continuous_queries.len();
            d.continuous_queries.retain(|c| c.name != name);
            Ok(d.continuous_queries.len() != before)
        })?;
        Ok(())
    }

    /// `DROP DATABASE` (idempotent).
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        // As in `drop_retention_policy`: no flush may write a segment into the directory
        // removed here.
        let _f = self.flush_lock.lock().await;
        let _g = self.gate.write().await;
        // InfluxDB drops the users' privileges on the database with it.
        let dropped = self.update_meta(|next| {
            let dropped = next.databases.remove(name).is_some();
            if dropped {
                for u in &mut next.users {
                    u.privileges.remove(name);
                }
            }
            Ok(dropped)
        })?;
        if !dropped {
            return Ok(());
        }
        let mut rec = vec![2u8];
        put_chunk(&mut rec, name.as_bytes());
        self.wal.append(&rec).await?;
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, _), _| d != name);
        self.db_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let p = self.dir.join("data").join(dir_name(name));
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io("removing database", e))?;
        }
        Ok(())
    }
}
