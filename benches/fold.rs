//! The apply worker's own cost per change on its hot path: folding changes
//! into a table's window (hash of the key, latest image kept) and turning
//! the window into the column arrays of one set-based statement.
//!
//! Input: pgbench-like updates of `pgbench_accounts` (int4 key, int4,
//! int4, 84-byte filler; binary values as pgoutput sends them with
//! `binary 'true'`), 4,096 per window: `accounts_distinct` touches 4,096
//! different rows (nothing folds), `branches_hot` 50 rows over and over
//! (everything folds). Reported in changes per second.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmigrate::apply::arrays::{ArrayBuilder, ArrayFormat};
use pgmigrate::apply::relation::{ColumnInfo, RelationInfo};
use pgmigrate::apply::window::TableWindow;
use pgmigrate::protocol::lsn::RelationId;
use pgmigrate::protocol::pgoutput::{ColumnRef, ReplicaIdentity, TupleData};

const WINDOW: usize = 4096;

fn accounts() -> Arc<RelationInfo> {
    let col = |name: &str, type_oid, is_key| ColumnInfo {
        name: name.into(),
        type_oid,
        is_key,
    };
    Arc::new(RelationInfo {
        id: RelationId(16_400),
        version: 1,
        schema: "public".into(),
        name: "pgbench_accounts".into(),
        qualified: "\"public\".\"pgbench_accounts\"".into(),
        columns: vec![
            col("aid", 23, true),
            col("bid", 23, false),
            col("abalance", 23, false),
            col("filler", 1042, false),
        ],
        identity: ReplicaIdentity::Default,
    })
}

fn row(key: i32, balance: i32) -> TupleData {
    let (k, b, bal) = (key.to_be_bytes(), 1i32.to_be_bytes(), balance.to_be_bytes());
    let filler = [b' '; 84];
    TupleData::from_values(
        [
            ColumnRef::Binary(&k),
            ColumnRef::Binary(&b),
            ColumnRef::Binary(&bal),
            ColumnRef::Binary(&filler),
        ]
        .into_iter(),
    )
    .unwrap_or_else(|e| panic!("bench tuple: {e}"))
}

/// Folds `rows` into a window, then builds the UPDATE's four arrays.
fn fold_and_build(rel: &RelationInfo, rows: &[TupleData]) -> usize {
    let mut w = TableWindow::default();
    for r in rows {
        if w.update(rel, None, r).is_err() {
            panic!("bench rows fold");
        }
    }
    let net = w.take();
    let mut builders: Vec<ArrayBuilder> = rel
        .columns
        .iter()
        .map(|c| ArrayBuilder::new(c.type_oid))
        .collect();
    for r in &net.updates {
        for (b, v) in builders.iter_mut().zip(r.iter_ref()) {
            match v {
                ColumnRef::Binary(x) => {
                    let _ = b.push(ArrayFormat::Binary, x);
                }
                _ => b.push_null(),
            }
        }
    }
    builders.into_iter().map(|b| b.finish().1.len()).sum()
}

fn bench(c: &mut Criterion) {
    let rel = accounts();
    let distinct: Vec<TupleData> = (0..WINDOW as i32)
        .map(|i| row(i * 7919 % 5_000_000, i))
        .collect();
    let hot: Vec<TupleData> = (0..WINDOW as i32).map(|i| row(i % 50, i)).collect();
    let mut g = c.benchmark_group("fold");
    g.throughput(Throughput::Elements(WINDOW as u64));
    g.bench_function("accounts_distinct", |b| {
        b.iter(|| black_box(fold_and_build(&rel, black_box(&distinct))))
    });
    g.bench_function("branches_hot", |b| {
        b.iter(|| black_box(fold_and_build(&rel, black_box(&hot))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
