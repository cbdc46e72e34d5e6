//! The local catalog: a SQLite cache of the repository's indexes.
//!
//! It is only a cache: deleting it loses nothing, and a damaged one is recreated from the
//! repository. Every write happens inside a transaction, so a crash leaves it consistent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::format::{BlobKind, IndexFile, PackEntry};
use crate::{Error, Id, Result};

pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS index_objects (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS index_packs (
    object TEXT NOT NULL, pack BLOB NOT NULL, PRIMARY KEY (object, pack)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS owed (
    target TEXT NOT NULL, object TEXT NOT NULL, PRIMARY KEY (target, object)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS own_snapshots (
    id BLOB PRIMARY KEY, time_ns INTEGER NOT NULL, snapshot BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    id BLOB PRIMARY KEY, kind INTEGER NOT NULL, pack BLOB NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_length INTEGER NOT NULL
) WITHOUT ROWID;
";

impl Catalog {
    /// Opens (or creates) the catalog in `dir`. A file SQLite finds damaged (or not a
    /// database) is moved aside, never deleted (it holds this host's copy of the audit log,
    /// evidence in an investigation), and a new catalog is built from the repository; any other
    /// failure (a busy or unreadable database) is an error and the file is left alone.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("catalog.sqlite");
        let err = |reason: String| Error::Catalog {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory: {e}")))?;
        match Self::try_open(&path) {
            Ok(c) => Ok(c),
            Err(first) if is_damaged(&first) => {
                let kept = format!(
                    "{}.damaged-{}",
                    path.display(),
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
                );
                for suffix in ["", "-wal", "-shm"] {
                    let from = format!("{}{suffix}", path.display());
                    if Path::new(&from).exists() {
                        std::fs::rename(&from, format!("{kept}{suffix}")).map_err(|e| {
                            err(format!("damaged ({first}), and cannot be moved aside: {e}"))
                        })?;
                    }
                }
                tracing::warn!(
                    "catalog {} is damaged ({first}); kept as {kept}, and rebuilt from the repository",
                    path.display()
                );
                Self::try_open(&path).map_err(|e| Error::CatalogDb {
                    path: path.display().to_string(),
                    source: e,
                })
            }
            Err(first) => Err(Error::CatalogDb {
                path: path.display().to_string(),
                source: first,
            }),
        }
    }

    fn try_open(path: &Path) -> rusqlite::Result<Self> {
        // Setting the journal mode needs the database to itself and does not wait for a busy
        // one: set it only once (it persists), and retry an open that finds the file busy
        // (an agent's jobs and a command open it at the same moments).
        let mut tries = 0;
        loop {
            match Self::try_open_once(path) {
                Err(e) if is_busy(&e) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn try_open_once(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.execute_batch("PRAGMA journal_mode = WAL;")?;
        }
        conn.execute_batch(SCHEMA)?;
        Ok(Catalog {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::CatalogDb {
            path: self.path.display().to_string(),
            source: e,
        }
    }

    pub fn known_indexes(&self) -> Result<HashSet<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM index_objects")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// The packs each cached index object names (objects cached before this was recorded
    /// have none).
    pub fn index_packs(&self) -> Result<std::collections::HashMap<String, Vec<Id>>> {
        let mut st = self
            .conn
            .prepare("SELECT object, pack FROM index_packs")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        let mut out: std::collections::HashMap<String, Vec<Id>> = Default::default();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let object: String = r.get(0).map_err(|e| self.err(e))?;
            let pack: Vec<u8> = r.get(1).map_err(|e| self.err(e))?;
            let pack = <[u8; 32]>::try_from(pack).map_err(|_| Error::Catalog {
                path: self.path.display().to_string(),
                reason: "malformed index_packs row".into(),
            })?;
            out.entry(object).or_default().push(Id(pack));
        }
        Ok(out)
    }

    /// Forgets index objects that were replaced by others naming the same packs (a
    /// consolidation): the blob locations stay valid, so they are kept.
    pub fn forget_indexes(&mut self, names: &[String]) -> Result<()> {
        let path = self.path.display().to_string();
        let tx = self.conn.transaction().map_err(|e| Error::CatalogDb {
            path: path.clone(),
            source: e,
        })?;
        for n in names {
            tx.execute("DELETE FROM index_objects WHERE name = ?1", [n])
                .map_err(|e| Error::CatalogDb {
                    path: self.path.display().to_string(),
                    source: e,
                })?;
            tx.execute("DELETE FROM index_packs WHERE object = ?1", [n])
                .map_err(|e| Error::CatalogDb {
                    path: self.path.display().to_string(),
                    source: e,
                })?;
        }
        tx.commit()
            .map_err(|e| Error::CatalogDb { path, source: e })
    }

    /// Forgets every cached index (used when indexes disappeared from the repository).
    pub fn reset(&mut self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM index_objects; DELETE FROM index_packs; DELETE FROM blobs;")
            .map_err(|e| self.err(e))
    }

    pub fn add_index(&mut self, name: &str, index: &IndexFile) -> Result<()> {
        self.add_indexes([(name, index)])
    }

    /// Records index objects in one transaction. Their blobs go in sorted by id, so the
    /// table's B-tree grows at its end instead of splitting pages at random: a new host
    /// filling its catalog from millions of blobs spends its time reading, not in SQLite.
    pub fn add_indexes<'a>(
        &mut self,
        files: impl IntoIterator<Item = (&'a str, &'a IndexFile)>,
    ) -> Result<()> {
        let files: Vec<(&str, &IndexFile)> = files.into_iter().collect();
        let mut blobs: Vec<(&Id, &PackEntry)> = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter())
            .flat_map(|p| p.blobs.iter().map(move |b| (&p.pack, b)))
            .collect();
        blobs.sort_unstable_by_key(|(_, b)| b.id);
        let path = self.path.display().to_string();
        let err = |e: rusqlite::Error| Error::CatalogDb {
            path: path.clone(),
            source: e,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .map_err(err)?;
            for (pack, b) in &blobs {
                let kind = match b.kind {
                    BlobKind::Data => 0,
                    BlobKind::Tree => 1,
                };
                st.execute(params![
                    &b.id.0[..],
                    kind,
                    &pack.0[..],
                    b.offset,
                    b.length,
                    b.raw_length
                ])
                .map_err(err)?;
            }
            let mut packs = tx
                .prepare_cached("INSERT OR IGNORE INTO index_packs VALUES (?1, ?2)")
                .map_err(err)?;
            for (name, index) in &files {
                for p in &index.packs {
                    packs.execute(params![name, &p.pack.0[..]]).map_err(err)?;
                }
            }
            let mut objects = tx
                .prepare_cached("INSERT OR REPLACE INTO index_objects VALUES (?1)")
                .map_err(err)?;
            for (name, _) in &files {
                objects.execute([name]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Calls `f` with every cached blob location.
    pub fn for_each_blob(&self, mut f: impl FnMut(Id, PackEntry)) -> Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT id, kind, pack, offset, length, raw_length FROM blobs")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: Vec<u8> = r.get(0).map_err(|e| self.err(e))?;
            let pack: Vec<u8> = r.get(2).map_err(|e| self.err(e))?;
            let (Ok(id), Ok(pack)) = (<[u8; 32]>::try_from(id), <[u8; 32]>::try_from(pack)) else {
                return Err(Error::Catalog {
                    path: self.path.display().to_string(),
                    reason: "malformed row".into(),
                });
            };
            let kind = if r.get::<_, i64>(1).map_err(|e| self.err(e))? == 1 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            };
            let entry = PackEntry {
                kind,
                id: Id(id),
                offset: r.get(3).map_err(|e| self.err(e))?,
                length: r.get(4).map_err(|e| self.err(e))?,
                raw_length: r.get(5).map_err(|e| self.err(e))?,
            };
            f(Id(pack), entry);
        }
        Ok(())
    }

    // ---- objects targets owe (a record; a listing of the targets recovers it) ----

    /// Records objects that targets missed during quorum writes.
    pub fn add_owed(&mut self, owed: &[(String, String)]) -> Result<()> {
        let path = self.path.display().to_string();
        let err = |e: rusqlite::Error| Error::CatalogDb {
            path: path.clone(),
            source: e,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO owed VALUES (?1, ?2)")
                .map_err(err)?;
            for (t, o) in owed {
                st.execute([t, o]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Replaces what `target` owes with what a full listing found.
    pub fn replace_owed(&mut self, target: &str, objects: &[String]) -> Result<()> {
        let path = self.path.display().to_string();
        let err = |e: rusqlite::Error| Error::CatalogDb {
            path: path.clone(),
            source: e,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM owed WHERE target = ?1", [target])
            .map_err(err)?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO owed VALUES (?1, ?2)")
                .map_err(err)?;
            for o in objects {
                st.execute([target, o]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The recorded objects each target owes.
    pub fn owed(&self) -> Result<Vec<(String, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT target, object FROM owed ORDER BY target, object")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    // ---- what this machine wrote with a host key ----

    /// Keeps the plaintext of a snapshot this machine wrote with a host key (which cannot read
    /// it back from the repository): `snapshots` lists these.
    pub fn add_own_snapshot(&mut self, id: &Id, snapshot: &crate::format::Snapshot) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO own_snapshots VALUES (?1, ?2, ?3)",
                params![&id.0[..], snapshot.time_ns, snapshot.encode()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The snapshots this machine wrote with a host key, oldest first. A row that does not
    /// decode is skipped with a warning (the catalog is a cache).
    pub fn own_snapshots(&self) -> Result<Vec<(Id, crate::format::Snapshot)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, snapshot FROM own_snapshots ORDER BY time_ns, id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, bytes) = row.map_err(|e| self.err(e))?;
            let decoded = <[u8; 32]>::try_from(id.as_slice())
                .map_err(|_| "an ID of the wrong length".to_string())
                .and_then(|id| {
                    crate::format::Snapshot::decode("own snapshot", &bytes)
                        .map(|s| (Id(id), s))
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok(pair) => out.push(pair),
                Err(e) => tracing::warn!("a snapshot in the local catalog is skipped: {e}"),
            }
        }
        Ok(out)
    }

    // ---- the audit log's local copy ----

    /// Keeps a copy of an audit entry (the first copy of a sequence number stays).
    pub fn add_audit(&mut self, entry: &crate::format::AuditEntry) -> Result<()> {
        let text = String::from_utf8_lossy(&entry.canonical_bytes()).into_owned();
        self.conn
            .execute(
                "INSERT OR IGNORE INTO audit VALUES (?1, ?2, ?3)",
                params![entry.seq as i64, entry.hash(), text],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The highest sequence number copied here (0 when none): where a listing of the log may
    /// start (`audit::append`).
    pub fn audit_head_seq(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// Every copied entry: (seq, the hash recorded with it, the entry as stored).
    #[allow(clippy::type_complexity)]
    pub fn audit_entries(
        &self,
    ) -> Result<
        Vec<(
            u64,
            String,
            std::result::Result<crate::format::AuditEntry, String>,
        )>,
    > {
        let mut st = self
            .conn
            .prepare("SELECT seq, hash, entry FROM audit ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, hash, text) = row.map_err(|e| self.err(e))?;
            out.push((
                seq as u64,
                hash,
                serde_json::from_str(&text).map_err(|e| e.to_string()),
            ));
        }
        Ok(out)
    }
}

/// Whether SQLite says another connection holds the file (try again shortly).
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether SQLite says the file is damaged or not a database at all (as opposed to busy,
/// unreadable or out of space, which a later run may get past).
fn is_damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_damaged_catalog_is_moved_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = vec![0x5au8; 8192];
        std::fs::write(dir.path().join("catalog.sqlite"), &garbage).unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        assert!(catalog.known_indexes().unwrap().is_empty());
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("catalog.sqlite.damaged-")
            })
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::read(kept[0].path()).unwrap(), garbage);
    }
}
