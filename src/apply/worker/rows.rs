//! Row-at-a-time statements: runs of inserts, and the UPDATE or DELETE of
//! one row found by its identity, each with typed parameters.

use std::sync::Arc;

use crate::conn::Param;
use crate::protocol::pgoutput::{ColumnRef, OldTuple, TupleData};

use super::super::relation::RelationInfo;
use super::super::statements::{self, ColumnMask, RowMatch};
use super::super::target_table::TargetTable;
use super::super::{ApplyError, Inconsistency};
use super::{Kind, StmtKey, Worker, INSERT_RUN, WINDOW_MAX_ROWS};

impl Worker {
    /// Queues the pending run of inserts: one set-based INSERT when the
    /// table's types allow, else a multi-row INSERT.
    pub(super) fn flush_run(&mut self) -> Result<(), ApplyError> {
        let Some((rel, rows)) = self.run.take() else {
            return Ok(());
        };
        if let Some(table) = self.tables.get(&(rel.id.0, rel.version)).cloned() {
            let refs: Vec<&TupleData> = rows.iter().collect();
            let all: Vec<usize> = (0..rel.columns.len()).collect();
            if self.queue_set(&rel, &table, Kind::Insert, &all, &refs, Vec::new())? {
                return Ok(());
            }
        }
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Insert,
            set: None,
            matching: None,
            rows: rows.len(),
            set_cols: Vec::new(),
        };
        let n = rows.len();
        let table = self.tables.get(&(rel.id.0, rel.version)).cloned();
        let width = rel.columns.len();
        let name = self.statement_name(&key, || {
            let types = table
                .map(|t| t.types.of((0..n).flat_map(|_| 0..width)))
                .unwrap_or_default();
            (statements::insert_rows(&rel, n), types)
        })?;
        let params: Vec<Param<'_>> = rows.iter().flat_map(|t| t.iter_ref().map(param)).collect();
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("insert into {}", rel.display()), e))?;
        if let Some(first) = rows.first() {
            self.queued_change(Kind::Insert, false, &rel, n as u64, first);
        }
        Ok(())
    }

    /// Adds a row to the pending run of inserts, queuing the run when the
    /// table changes or the run is full.
    pub(super) fn push_insert(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        new: TupleData,
    ) -> Result<(), ApplyError> {
        let limit = if table.array_types.is_some() {
            WINDOW_MAX_ROWS
        } else {
            INSERT_RUN.min(65535 / rel.columns.len().max(1)).max(1)
        };
        let same = matches!(&self.run, Some((r, _)) if r.id == rel.id && r.version == rel.version);
        if !same {
            self.flush_run()?;
        }
        let (_, rows) = self
            .run
            .get_or_insert_with(|| (rel.clone(), Vec::with_capacity(limit.min(256))));
        rows.push(new);
        if rows.len() >= limit {
            self.flush_run()?;
        }
        Ok(())
    }

    /// Queues one UPDATE. `old` is the key or row the source sent, if any
    /// (a key change, or FULL identity); else `new` carries the key.
    pub(super) fn queue_update_row(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        old: Option<&OldTuple>,
        new: &TupleData,
    ) -> Result<(), ApplyError> {
        // A key change (old key sent) must set the identity column
        // too; otherwise leave GENERATED ALWAYS columns alone.
        let skip: &[bool] = if old.is_some() && !rel.full_identity() {
            &[]
        } else {
            &table.always_identity
        };
        let set = ColumnMask::from_flags(
            new.iter_ref()
                .map(|v| !matches!(v, ColumnRef::UnchangedToast)),
        );
        let identity_tuple: &TupleData = old.map(OldTuple::tuple).unwrap_or(new);
        let matching = match_mask(rel, identity_tuple);
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Update,
            set: Some(set),
            matching: Some(matching),
            rows: 1,
            set_cols: Vec::new(),
        };
        let (Some(set), Some(matching)) = (&key.set, &key.matching) else {
            unreachable!("both masks were just set")
        };
        let name = self.statement_name(&key, || {
            let m = RowMatch {
                match_cols: matching,
                text_match: &table.types.text_match,
                only: table.only,
            };
            // Parameters: the columns set, then those finding the row.
            let set_cols = (0..rel.columns.len())
                .filter(|&i| set.has(i) && !skip.get(i).copied().unwrap_or(false));
            let mut types = table.types.of(set_cols);
            types.extend(
                table
                    .types
                    .of((0..rel.columns.len()).filter(|&i| matching.has(i))),
            );
            (statements::update(rel, set, skip, m), types)
        })?;
        let mut params: Vec<Param<'_>> = Vec::with_capacity(rel.columns.len() * 2);
        for (i, v) in new.iter_ref().enumerate() {
            if set.has(i) && !skip.get(i).copied().unwrap_or(false) {
                params.push(param(v));
            }
        }
        push_identity(&mut params, identity_tuple, matching);
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("update of {}", rel.display()), e))?;
        self.queued_change(Kind::Update, false, rel, 1, identity_tuple);
        Ok(())
    }

    /// Queues one DELETE of the row `tuple` identifies.
    pub(super) fn queue_delete_row(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        tuple: &TupleData,
    ) -> Result<(), ApplyError> {
        let matching = match_mask(rel, tuple);
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind: Kind::Delete,
            set: None,
            matching: Some(matching),
            rows: 1,
            set_cols: Vec::new(),
        };
        let Some(matching) = &key.matching else {
            unreachable!("the mask was just set")
        };
        let name = self.statement_name(&key, || {
            let m = RowMatch {
                match_cols: matching,
                text_match: &table.types.text_match,
                only: table.only,
            };
            let types = table
                .types
                .of((0..rel.columns.len()).filter(|&i| matching.has(i)));
            (statements::delete(rel, m), types)
        })?;
        let mut params: Vec<Param<'_>> = Vec::with_capacity(rel.columns.len());
        push_identity(&mut params, tuple, matching);
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("delete from {}", rel.display()), e))?;
        self.queued_change(Kind::Delete, false, rel, 1, tuple);
        Ok(())
    }
}

/// The values that find the old row, in the order of the WHERE clause.
fn push_identity<'a>(params: &mut Vec<Param<'a>>, tuple: &'a TupleData, matching: &ColumnMask) {
    for (i, v) in tuple.iter_ref().enumerate() {
        if matching.has(i) {
            params.push(param(v));
        }
    }
}

/// Columns that find the old row: the key columns, or under FULL identity
/// every column the old tuple actually carries (not an unchanged TOAST
/// placeholder).
fn match_mask(rel: &RelationInfo, tuple: &TupleData) -> ColumnMask {
    if rel.full_identity() {
        ColumnMask::from_flags(
            tuple
                .iter_ref()
                .map(|v| !matches!(v, ColumnRef::UnchangedToast)),
        )
    } else {
        ColumnMask::from_flags(rel.columns.iter().map(|c| c.is_key))
    }
}

pub(super) fn check_width(
    rel: &RelationInfo,
    tuple: &TupleData,
    db: &str,
    worker: usize,
) -> Result<(), ApplyError> {
    if tuple.len() != rel.columns.len() {
        return Err(ApplyError::Setup {
            db: db.to_string(),
            worker,
            what: Inconsistency::RowWidth {
                table: rel.display(),
                got: tuple.len(),
                expected: rel.columns.len(),
            },
        });
    }
    Ok(())
}

/// A column value as a parameter, borrowed from the received message:
/// nothing is copied or reference-counted on the way to the socket.
pub(super) fn param(v: ColumnRef<'_>) -> Param<'_> {
    match v {
        ColumnRef::Null | ColumnRef::UnchangedToast => Param::Null,
        ColumnRef::Text(b) => Param::RawText(b),
        ColumnRef::Binary(b) => Param::Binary(b),
    }
}
