//! A redb database file that survives I/O errors. redb marks a database as
//! failed after any I/O error (a full disk, say) and answers every later
//! read and write with `PreviousIo` until it is reopened; emberd used to
//! need a restart. [`DbFile`] drops and reopens the database when that
//! happens: a write that fails with an I/O error reopens at once (if no
//! transaction still holds the old file, else the next access does), a
//! transaction that finds the database failed reopens and retries (reads
//! always; writes only at `begin_write`, before anything was written).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, StorageError, WriteTransaction};

use super::{Result, StoreError};

/// How long a reopen waits for transactions of the failed database (they
/// keep its file locked) to end.
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// A reopenable redb database.
pub struct DbFile {
    path: PathBuf,
    /// None between a failure and the reopen that follows it.
    db: RwLock<Option<Arc<Database>>>,
}

/// True for errors after which redb wants the database reopened.
pub fn is_io(e: &StoreError) -> bool {
    let StoreError::Db(e) = e else {
        return false;
    };
    matches!(
        e.as_ref(),
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseAlreadyOpen
    )
}

impl DbFile {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// The open database, reopening it if a failure closed it.
    fn current(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(db.clone());
        }
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        // Transactions of the failed database keep its file (and redb's lock
        // on it) open; they end soon, failing themselves.
        let start = Instant::now();
        let db = loop {
            match Database::create(&self.path) {
                Ok(db) => break Arc::new(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < REOPEN_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        eprintln!(
            "emberd: reopened {} after an I/O error",
            self.path.display()
        );
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Forgets `failed` (if it is still the current database) so the next
    /// access reopens the file.
    fn close(&self, failed: &Arc<Database>) {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|d| Arc::ptr_eq(d, failed)) {
            *slot = None;
        }
    }

    /// Runs `f` on a read transaction; if it fails because the database
    /// hit an I/O error, reopens and runs it once more.
    pub fn read<T>(&self, f: impl Fn(&ReadTransaction) -> Result<T>) -> Result<T> {
        let db = self.current()?;
        let first = db
            .begin_read()
            .map_err(StoreError::from)
            .and_then(|r| f(&r));
        match first {
            Err(e) if is_io(&e) => {
                self.close(&db);
                drop(db);
                let db = self.current()?;
                let r = db.begin_read()?;
                f(&r)
            }
            other => other,
        }
    }

    /// Begins a write transaction (reopening the database first if it has
    /// failed).
    pub fn begin_write(&self) -> Result<Write<'_>> {
        let db = self.current()?;
        let w = match db.begin_write() {
            Err(redb::TransactionError::Storage(StorageError::PreviousIo)) => {
                self.close(&db);
                drop(db);
                let db = self.current()?;
                let w = db.begin_write()?;
                return Ok(Write { w, db, file: self });
            }
            other => other?,
        };
        Ok(Write { w, db, file: self })
    }
}

/// A write transaction of a [`DbFile`] (used like redb's).
pub struct Write<'a> {
    w: WriteTransaction,
    db: Arc<Database>,
    file: &'a DbFile,
}

impl std::ops::Deref for Write<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.w
    }
}

impl Write<'_> {
    /// Commits; an I/O error closes the database so that the next
    /// transaction reopens it. The failed commit is not retried: it did not
    /// happen, and the caller hears so.
    pub fn commit(self) -> Result<()> {
        match self.w.commit() {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = StoreError::from(e);
                if is_io(&e) {
                    self.file.close(&self.db);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableDefinition;

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[test]
    fn reads_and_writes_go_through_and_close_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let db = DbFile::open(&dir.path().join("x.redb")).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(T).unwrap().insert(1, 2).unwrap();
        w.commit().unwrap();
        let cur = db.current().unwrap();
        db.close(&cur);
        drop(cur);
        let v = db
            .read(|r| Ok(r.open_table(T)?.get(1)?.map(|g| g.value())))
            .unwrap();
        assert_eq!(v, Some(2));
    }
}
