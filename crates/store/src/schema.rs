//! Opening the SQLite file: pragmas (durability, locking) and the versioned schema.
//!
//! Settings, and why:
//! - `journal_mode=WAL`: readers never block the writer, commits append to the `-wal` file.
//! - `synchronous=NORMAL` by default ([`Durability::Normal`]): in WAL mode a commit is written
//!   to the WAL with `write()` before it returns, so every committed object survives a crash or
//!   kill of the ferrovirt process (the data is in the kernel's page cache); only a power loss or
//!   kernel crash can lose the last commits since the last checkpoint, and the file stays
//!   consistent. `FULL` also fsyncs the WAL at every commit (survives power loss). Measured on
//!   this machine (ext4 on virtio disk, 2 busy cores, `tests/perf.rs`): NORMAL 8,000-13,000
//!   creates/s, FULL 270-450 creates/s (~2-4 ms fsync per commit), far below the 5,000/s
//!   target, so FULL is an option ([`Durability::Full`]), not the default. TPM/NVRAM state is
//!   not in SQLite and has its own fsync discipline.
//! - `locking_mode=EXCLUSIVE`: the store keeps its resourceVersion counter and watch fan-out in
//!   memory, so exactly one process may write the file; the exclusive lock is taken at open
//!   (by the migration transaction) and a second `ferrovirt serve` gets [`StoreError::InUse`].
//! - Schema version in `PRAGMA user_version`; [`migrate`] upgrades step by step inside one
//!   transaction and refuses files from a newer ferrovirt.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::error::{SqliteContext, StoreError};

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 1;

/// How hard a commit is pushed to disk (SQLite `PRAGMA synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives process crashes; a power loss may roll back the newest
    /// commits (never corrupts). The default.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit fsyncs the WAL; survives power loss, much slower.
    Full,
}

impl Durability {
    fn pragma_value(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('resource_version', 0), ('compacted_rv', 0);

-- Current objects; `data` is the whole object as JSON, including metadata.resourceVersion.
-- namespace is '' for cluster-scoped objects.
CREATE TABLE objects (
    grp       TEXT NOT NULL,
    resource  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    uid       TEXT NOT NULL,
    rv        INTEGER NOT NULL,
    labels    TEXT,  -- metadata.labels as JSON (NULL when none), for selector filtering
    data      TEXT NOT NULL,
    PRIMARY KEY (grp, resource, namespace, name)
) WITHOUT ROWID;
CREATE INDEX objects_by_uid ON objects (uid);

-- metadata.ownerReferences[].uid of every object, for the garbage collector.
CREATE TABLE owner_refs (
    owner_uid TEXT NOT NULL,
    grp       TEXT NOT NULL,
    resource  TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    PRIMARY KEY (grp, resource, namespace, name, owner_uid)
) WITHOUT ROWID;
CREATE INDEX owner_refs_by_owner ON owner_refs (owner_uid);

-- Bounded log of watch events, one per write, keyed by the resourceVersion the write produced.
-- prev_labels: the labels before a MODIFIED write (so selector watches can turn it into
-- ADDED/DELETED as Kubernetes does).
CREATE TABLE events (
    rv          INTEGER PRIMARY KEY,
    grp         TEXT NOT NULL,
    resource    TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    data        TEXT NOT NULL,
    prev_labels TEXT
);
";

/// Opens (creating if needed) the database file with the store's pragmas and migrates it.
/// Mode of the database file and its `-wal`/`-shm`/`-journal` companions: the objects may hold
/// secrets, so only the owner reads them. SQLite gives the companions the database file's mode.
pub const DATABASE_FILE_MODE: u32 = 0o600;

/// Creates the database file 0600 before SQLite opens it (SQLite would create it 0644 under the
/// usual umask), and tightens the mode of an existing file and of its companions.
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file_error = |path: &Path, action| {
        let path = path.to_path_buf();
        move |source| StoreError::File {
            path,
            action,
            source,
        }
    };
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .append(true)
        .mode(DATABASE_FILE_MODE)
        .open(path)
        .map_err(file_error(path, "create with mode 0600"))?;
    let mut companions = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        companions.push(name.into());
    }
    for file in companions {
        match std::fs::symlink_metadata(&file) {
            Ok(meta)
                if meta.is_file() && meta.permissions().mode() & 0o777 != DATABASE_FILE_MODE =>
            {
                std::fs::set_permissions(
                    &file,
                    std::fs::Permissions::from_mode(DATABASE_FILE_MODE),
                )
                .map_err(file_error(&file, "set mode 0600"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let in_use = |e: &rusqlite::Error| {
        matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        )
    };
    let map = |action: &'static str| {
        move |source: rusqlite::Error| {
            if in_use(&source) {
                StoreError::InUse {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Sqlite { action, source }
            }
        }
    };
    make_private(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(map("opening the database file"))?;
    conn.busy_timeout(Duration::from_millis(200))
        .during("setting the busy timeout")?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(map("setting locking_mode=EXCLUSIVE"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(map("setting journal_mode=WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::invalid(
            "journal_mode",
            format!(
                "SQLite refused WAL mode for {} (got {mode}); put the data directory on a local filesystem",
                path.display()
            ),
        ));
    }
    conn.pragma_update(None, "synchronous", durability.pragma_value())
        .during("setting synchronous")?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path).map_err(|e| match e {
        StoreError::Sqlite { source, .. } if in_use(&source) => StoreError::InUse {
            path: path.to_path_buf(),
        },
        other => other,
    })?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], one step at a time, in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .during("starting the schema migration")?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .during("reading the schema version")?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let mut version = found;
    while version < SCHEMA_VERSION {
        // Future steps go here: `if version == 1 { tx.execute_batch(SCHEMA_V1_TO_V2)... }`.
        if version == 0 {
            tx.execute_batch(SCHEMA_V1)
                .during("creating the schema (version 1)")?;
        }
        version += 1;
    }
    if version != found {
        tx.pragma_update(None, "user_version", version)
            .during("writing the schema version")?;
    }
    tx.commit().during("committing the schema migration")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_schema_and_sets_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let conn = open(&path, Durability::Normal).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = open(&path, Durability::Normal).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn second_opener_is_told_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let _first = open(&path, Durability::Normal).unwrap();
        let err = open(&path, Durability::Full).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    }
}
