//! Set-based statements: a table's window, or a run of rows, written as
//! one statement over arrays (`unnest`) instead of one per row.

use std::sync::Arc;

use crate::conn::Param;
use crate::protocol::pgoutput::{ColumnRef, TupleData};

use super::super::arrays::{ArrayBuilder, ArrayFormat};
use super::super::relation::RelationInfo;
use super::super::statements;
use super::super::target_table::TargetTable;
use super::super::window::NetChanges;
use super::super::{ApplyError, Inconsistency};
use super::{Kind, StmtKey, Worker};

impl Worker {
    /// Queues one set-based statement over `rows`: an array per column of
    /// `cols` (the key columns first for UPDATE and DELETE). Returns false,
    /// queuing nothing, when the rows go one by one instead: a single row
    /// (its prepared statement is as cheap), column types the target has
    /// no arrays for, or a column mixing value formats.
    pub(super) fn queue_set(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        kind: Kind,
        cols: &[usize],
        rows: &[&TupleData],
        set_cols: Vec<usize>,
    ) -> Result<bool, ApplyError> {
        let Some(array_types) = table.array_types.as_deref() else {
            return Ok(false);
        };
        if rows.len() < 2 {
            return Ok(false);
        }
        // Where each column of a row goes among the arrays.
        let mut slot = vec![usize::MAX; rel.columns.len()];
        for (n, &c) in cols.iter().enumerate() {
            if let Some(s) = slot.get_mut(c) {
                *s = n;
            }
        }
        let mut builders: Vec<ArrayBuilder> = cols
            .iter()
            .map(|&c| ArrayBuilder::new(rel.columns[c].type_oid))
            .collect();
        for row in rows {
            for (i, v) in row.iter_ref().enumerate() {
                let Some(b) = slot.get(i).and_then(|&n| builders.get_mut(n)) else {
                    continue;
                };
                let pushed = match v {
                    ColumnRef::Null | ColumnRef::UnchangedToast => {
                        b.push_null();
                        Ok(())
                    }
                    ColumnRef::Text(t) => b.push(ArrayFormat::Text, t),
                    ColumnRef::Binary(t) => b.push(ArrayFormat::Binary, t),
                };
                if pushed.is_err() {
                    return Ok(false);
                }
            }
        }
        let arrays: Vec<(ArrayFormat, Vec<u8>)> =
            builders.into_iter().map(ArrayBuilder::finish).collect();
        let params: Vec<Param<'_>> = arrays
            .iter()
            .map(|(f, b)| match f {
                ArrayFormat::Binary => Param::Binary(b),
                ArrayFormat::Text => Param::RawText(b),
            })
            .collect();
        let types: Vec<u32> = cols.iter().map(|&c| array_types[c]).collect();
        let only = table.only;
        let key = StmtKey {
            rel: rel.id.0,
            version: rel.version,
            kind,
            set: None,
            matching: None,
            rows: 0,
            set_cols,
        };
        let set_cols = key.set_cols.clone();
        let name = self.statement_name(&key, || {
            let sql = match kind {
                Kind::Insert => statements::insert_set(rel),
                Kind::Delete => statements::delete_set(rel, only),
                Kind::Update => statements::update_set(rel, &set_cols, only),
            };
            (sql, types)
        })?;
        let what = match kind {
            Kind::Insert => "insert into",
            Kind::Update => "update of",
            Kind::Delete => "delete from",
        };
        self.conn
            .queue_execute(&name, &params)
            .map_err(|e| self.err(format!("set-based {what} {}", rel.display()), e))?;
        if let Some(first) = rows.first() {
            self.queued_change(kind, true, rel, rows.len() as u64, first);
        }
        Ok(true)
    }

    /// Queues what a table's window comes to.
    pub(super) fn flush_window(&mut self, rel_id: u32) -> Result<(), ApplyError> {
        let Some((rel, mut window)) = self.windows.remove(&rel_id) else {
            return Ok(());
        };
        self.windowed_rows = self.windowed_rows.saturating_sub(window.len());
        self.windowed_bytes = self.windowed_bytes.saturating_sub(window.bytes());
        let net = window.take();
        let table = self.tables.get(&(rel.id.0, rel.version)).cloned();
        let Some(table) = table else {
            return Err(self.setup_err(Inconsistency::FoldedUnread {
                table: rel.display(),
            }));
        };
        self.queue_net(&rel, &table, net)
    }

    /// Queues every window's net effect.
    pub(super) fn flush_windows(&mut self) -> Result<(), ApplyError> {
        let mut ids: Vec<u32> = self.windows.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.flush_window(id)?;
        }
        self.windowed_rows = 0;
        self.windowed_bytes = 0;
        Ok(())
    }

    pub(super) fn queue_net(
        &mut self,
        rel: &Arc<RelationInfo>,
        table: &TargetTable,
        net: NetChanges,
    ) -> Result<(), ApplyError> {
        let keys = statements::key_columns(rel);
        // Keys are distinct across the three lists, so any order is right.
        if !net.deletes.is_empty() {
            let rows: Vec<&TupleData> = net.deletes.iter().collect();
            if !self.queue_set(rel, table, Kind::Delete, &keys, &rows, Vec::new())? {
                for row in rows {
                    self.queue_delete_row(rel, table, row)?;
                }
            }
        }
        // Updates grouped by the columns they set (unchanged TOAST values
        // and GENERATED ALWAYS identity columns are left alone).
        let mut groups: Vec<(Vec<usize>, Vec<&TupleData>)> = Vec::new();
        for row in &net.updates {
            let set: Vec<usize> = row
                .iter_ref()
                .enumerate()
                .filter(|(i, v)| {
                    !rel.columns[*i].is_key
                        && !matches!(v, ColumnRef::UnchangedToast)
                        && !table.always_identity.get(*i).copied().unwrap_or(false)
                })
                .map(|(i, _)| i)
                .collect();
            match groups.iter_mut().find(|(s, _)| *s == set) {
                Some((_, rows)) => rows.push(row),
                None => groups.push((set, vec![row])),
            }
        }
        for (set, rows) in groups {
            if set.is_empty() {
                // Only the key, unchanged: nothing to write.
                continue;
            }
            let cols: Vec<usize> = keys.iter().chain(set.iter()).copied().collect();
            if !self.queue_set(rel, table, Kind::Update, &cols, &rows, set)? {
                for row in rows {
                    self.queue_update_row(rel, table, None, row)?;
                }
            }
        }
        for row in net.inserts {
            self.push_insert(rel, table, row)?;
        }
        self.flush_run()
    }
}
