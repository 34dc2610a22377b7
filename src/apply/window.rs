//! The net effect of a run of changes to one table inside a target
//! transaction, keyed by replica identity.
//!
//! A batch groups thousands of source transactions into one target
//! transaction, so nobody can observe the states in between: only each
//! row's last image matters. Applying every change anyway hurts twice. A hot
//! row updated by every source transaction (pgbench's branches) gets one
//! new version per change inside a single transaction, which PostgreSQL
//! cannot prune until commit, so each update walks a longer HOT chain than
//! the last. And one statement per row pays the executor's fixed cost per
//! row. The window keeps, per key, whether the row existed before the
//! window and its latest image; the worker then runs one set-based
//! DELETE, UPDATE and INSERT per table.
//!
//! Only tables where that reordering cannot be told apart are windowed
//! (see [`super::target_table`]): a replica identity key whose byte form is
//! its equality (so two byte strings never name the same row), no other
//! unique index or exclusion constraint (which a different order of rows
//! could trip), no trigger that fires for replicated rows.

use std::collections::HashMap;

use crate::protocol::pgoutput::{ColumnRef, OldTuple, TupleData};

use super::relation::RelationInfo;

/// A change the window cannot fold in: the caller applies what the window
/// holds for the table, then this change on its own, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct NotFoldable;

#[derive(Debug)]
struct Entry {
    /// The tuple that carries the key (for a DELETE).
    key_tuple: TupleData,
    /// The row was on the target before the window (its first change was
    /// an update or delete, not an insert).
    existed: bool,
    /// The row's latest image, or `None` once deleted. May hold
    /// unchanged-TOAST placeholders only when `existed`: they keep the
    /// target's value.
    row: Option<TupleData>,
}

/// The window of one table.
#[derive(Debug, Default)]
pub struct TableWindow {
    index: HashMap<Vec<u8>, usize>,
    entries: Vec<Entry>,
    /// Bytes of tuples held, to bound memory.
    bytes: usize,
}

/// What a window comes to: rows to delete, update and insert. Each key
/// appears at most once over the three lists, so their order is free.
#[derive(Debug, Default)]
pub struct NetChanges {
    /// Tuples carrying the key of each row to delete.
    pub deletes: Vec<TupleData>,
    /// New images of rows to update (placeholders mark columns to keep).
    pub updates: Vec<TupleData>,
    /// Rows to insert.
    pub inserts: Vec<TupleData>,
}

/// The key of a tuple as bytes: each key column's format and value, length
/// prefixed. `None` when a key column is NULL or not sent.
fn key_of(rel: &RelationInfo, tuple: &TupleData) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(16);
    for (c, v) in rel.columns.iter().zip(tuple.iter_ref()) {
        if !c.is_key {
            continue;
        }
        let (tag, b) = match v {
            ColumnRef::Text(b) => (b't', b),
            ColumnRef::Binary(b) => (b'b', b),
            ColumnRef::Null | ColumnRef::UnchangedToast => return None,
        };
        key.push(tag);
        key.extend_from_slice(&(b.len() as u64).to_le_bytes());
        key.extend_from_slice(b);
    }
    (!key.is_empty()).then_some(key)
}

/// `newer` with its unchanged-TOAST placeholders filled from `older`.
fn merge(older: &TupleData, newer: TupleData) -> TupleData {
    let has_placeholder = newer
        .iter_ref()
        .any(|v| matches!(v, ColumnRef::UnchangedToast));
    if !has_placeholder || older.len() != newer.len() {
        return newer;
    }
    let values = newer
        .iter_ref()
        .zip(older.iter_ref())
        .map(|(n, o)| match n {
            ColumnRef::UnchangedToast => o,
            other => other,
        })
        .collect::<Vec<_>>();
    TupleData::from_values(values.into_iter()).unwrap_or(newer)
}

impl TableWindow {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the window holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of tuples held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn slot(&mut self, key: Vec<u8>, key_tuple: &TupleData, existed: bool) -> (&mut Entry, bool) {
        let n = self.entries.len();
        let i = *self.index.entry(key).or_insert(n);
        let fresh = i == n;
        if fresh {
            self.bytes += key_tuple.raw().len();
            self.entries.push(Entry {
                key_tuple: key_tuple.clone(),
                existed,
                row: None,
            });
        }
        (&mut self.entries[i], fresh)
    }

    /// Folds in an insert.
    pub fn insert(&mut self, rel: &RelationInfo, new: &TupleData) -> Result<(), NotFoldable> {
        let key = key_of(rel, new).ok_or(NotFoldable)?;
        let size = new.raw().len();
        let (entry, fresh) = self.slot(key, new, false);
        if !fresh && entry.row.is_some() {
            // The row is already there: let the target say so.
            return Err(NotFoldable);
        }
        entry.row = Some(new.clone());
        self.bytes += size;
        Ok(())
    }

    /// Folds in an update; a key change is not folded.
    pub fn update(
        &mut self,
        rel: &RelationInfo,
        old: Option<&OldTuple>,
        new: &TupleData,
    ) -> Result<(), NotFoldable> {
        let key = key_of(rel, new).ok_or(NotFoldable)?;
        if let Some(old) = old {
            if key_of(rel, old.tuple()).as_ref() != Some(&key) {
                return Err(NotFoldable);
            }
        }
        if let Some(&i) = self.index.get(&key) {
            if self.entries[i].row.is_none() {
                // Updating a row deleted earlier in the window.
                return Err(NotFoldable);
            }
        }
        let size = new.raw().len();
        let (entry, _) = self.slot(key, new, true);
        entry.row = Some(match entry.row.take() {
            Some(older) => merge(&older, new.clone()),
            None => new.clone(),
        });
        self.bytes += size;
        Ok(())
    }

    /// Folds in a delete.
    pub fn delete(&mut self, rel: &RelationInfo, old: &OldTuple) -> Result<(), NotFoldable> {
        let key = key_of(rel, old.tuple()).ok_or(NotFoldable)?;
        if let Some(&i) = self.index.get(&key) {
            if self.entries[i].row.is_none() {
                return Err(NotFoldable);
            }
        }
        let (entry, _) = self.slot(key, old.tuple(), true);
        entry.row = None;
        Ok(())
    }

    /// Empties the window into the changes still to make.
    pub fn take(&mut self) -> NetChanges {
        self.index.clear();
        self.bytes = 0;
        let mut net = NetChanges::default();
        for e in self.entries.drain(..) {
            match (e.existed, e.row) {
                (true, None) => net.deletes.push(e.key_tuple),
                (true, Some(row)) => net.updates.push(row),
                (false, Some(row)) => net.inserts.push(row),
                (false, None) => {}
            }
        }
        net
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::relation::sample;
    use crate::protocol::pgoutput::ReplicaIdentity;

    fn rel() -> RelationInfo {
        sample(
            ReplicaIdentity::Default,
            &[("id", 23, true), ("a", 23, false), ("b", 23, false)],
        )
    }

    fn t(vals: &[Option<&str>]) -> TupleData {
        TupleData::from_values(vals.iter().map(|v| match v {
            Some("~") => ColumnRef::UnchangedToast,
            Some(s) => ColumnRef::Text(s.as_bytes()),
            None => ColumnRef::Null,
        }))
        .unwrap()
    }

    fn texts(rows: &[TupleData]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| {
                r.iter_ref()
                    .map(|v| match v {
                        ColumnRef::Text(b) => String::from_utf8_lossy(b).into_owned(),
                        ColumnRef::Binary(_) => "?".into(),
                        ColumnRef::Null => "NULL".into(),
                        ColumnRef::UnchangedToast => "~".into(),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn repeated_updates_keep_the_last_image() {
        let r = rel();
        let mut w = TableWindow::default();
        for v in ["1", "2", "3"] {
            w.update(&r, None, &t(&[Some("7"), Some(v), Some("x")]))
                .unwrap();
        }
        let net = w.take();
        assert_eq!(texts(&net.updates), vec![vec!["7", "3", "x"]]);
        assert!(net.deletes.is_empty() && net.inserts.is_empty());
        assert!(w.is_empty());
    }

    #[test]
    fn unchanged_toast_is_filled_from_an_earlier_image_or_kept() {
        let r = rel();
        let mut w = TableWindow::default();
        w.update(&r, None, &t(&[Some("1"), Some("a"), Some("~")]))
            .unwrap();
        w.update(&r, None, &t(&[Some("1"), Some("~"), Some("~")]))
            .unwrap();
        w.insert(&r, &t(&[Some("2"), Some("big"), Some("q")]))
            .unwrap();
        w.update(&r, None, &t(&[Some("2"), Some("z"), Some("~")]))
            .unwrap();
        let net = w.take();
        assert_eq!(texts(&net.updates), vec![vec!["1", "a", "~"]]);
        assert_eq!(texts(&net.inserts), vec![vec!["2", "z", "q"]]);
    }

    #[test]
    fn insert_then_delete_is_nothing_and_delete_then_insert_an_update() {
        let r = rel();
        let mut w = TableWindow::default();
        w.insert(&r, &t(&[Some("1"), Some("a"), None])).unwrap();
        w.delete(&r, &OldTuple::Key(t(&[Some("1"), None, None])))
            .unwrap();
        w.delete(&r, &OldTuple::Key(t(&[Some("2"), None, None])))
            .unwrap();
        w.insert(&r, &t(&[Some("2"), Some("b"), None])).unwrap();
        w.delete(&r, &OldTuple::Key(t(&[Some("3"), None, None])))
            .unwrap();
        let net = w.take();
        assert!(net.inserts.is_empty());
        assert_eq!(texts(&net.updates), vec![vec!["2", "b", "NULL"]]);
        assert_eq!(texts(&net.deletes), vec![vec!["3", "NULL", "NULL"]]);
    }

    #[test]
    fn what_cannot_be_folded_is_refused() {
        let r = rel();
        let mut w = TableWindow::default();
        let old = OldTuple::Key(t(&[Some("1"), None, None]));
        // A key change.
        assert_eq!(
            w.update(&r, Some(&old), &t(&[Some("9"), Some("a"), None])),
            Err(NotFoldable)
        );
        // The same key sent as old is fine.
        w.update(&r, Some(&old), &t(&[Some("1"), Some("a"), None]))
            .unwrap();
        // A duplicate insert, an update or delete after a delete.
        assert_eq!(w.insert(&r, &t(&[Some("1"), None, None])), Err(NotFoldable));
        w.delete(&r, &old).unwrap();
        assert_eq!(
            w.update(&r, None, &t(&[Some("1"), Some("b"), None])),
            Err(NotFoldable)
        );
        assert_eq!(w.delete(&r, &old), Err(NotFoldable));
        // A NULL key.
        assert_eq!(w.insert(&r, &t(&[None, None, None])), Err(NotFoldable));
    }
}
