//! Throughput of the pgoutput decoder on realistic traffic: a pgbench
//! transaction (Begin, three Updates, an Insert, Commit, text values) and a
//! wide Insert with a 2 kB text value. Reported in bytes of pgoutput
//! payload per second.
//!
//! `decode_walk` visits every value as a `Bytes` view (`TupleData::iter`),
//! `decode_walk_ref` as a borrowed slice (`TupleData::iter_ref`). The
//! `decode_collect` variant copies each tuple's values into a `Vec`, the
//! eager design the lazy `TupleData` iterator avoids, to show what it
//! would cost.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmigrate::protocol::pgoutput::{
    decode, ColumnRef, ColumnValue, DecodeContext, PgOutputMessage, TupleData,
};

/// A pgoutput message under construction, big-endian as on the wire.
struct W(Vec<u8>);

impl W {
    fn tag(t: u8) -> W {
        W(vec![t])
    }
    fn u8(mut self, v: u8) -> W {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// A TupleData of text values; `None` is NULL.
    fn tuple(mut self, cols: &[Option<&[u8]>]) -> W {
        self.0.extend_from_slice(&(cols.len() as i16).to_be_bytes());
        for c in cols {
            match c {
                None => self.0.push(b'n'),
                Some(v) => {
                    self.0.push(b't');
                    self.0.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    self.0.extend_from_slice(v);
                }
            }
        }
        self
    }
    fn done(self) -> Bytes {
        Bytes::from(self.0)
    }
}

fn pgbench_transaction() -> Vec<Bytes> {
    let filler = [b' '; 84];
    vec![
        W::tag(b'B')
            .u64(0x16_B374_D848)
            .u64(760_000_000_000_000)
            .u32(123_456)
            .done(),
        // pgbench_accounts: aid, bid, abalance, filler char(84)
        W::tag(b'U')
            .u32(16_396)
            .u8(b'N')
            .tuple(&[Some(b"4711"), Some(b"1"), Some(b"-2331"), Some(&filler)])
            .done(),
        // pgbench_tellers: tid, bid, tbalance, filler (NULL)
        W::tag(b'U')
            .u32(16_390)
            .u8(b'N')
            .tuple(&[Some(b"7"), Some(b"1"), Some(b"18822"), None])
            .done(),
        // pgbench_branches: bid, bbalance, filler (NULL)
        W::tag(b'U')
            .u32(16_393)
            .u8(b'N')
            .tuple(&[Some(b"1"), Some(b"-77211"), None])
            .done(),
        // pgbench_history: tid, bid, aid, delta, mtime, filler (NULL)
        W::tag(b'I')
            .u32(16_399)
            .u8(b'N')
            .tuple(&[
                Some(b"7"),
                Some(b"1"),
                Some(b"4711"),
                Some(b"-2331"),
                Some(b"2026-04-20 10:11:12.123456"),
                None,
            ])
            .done(),
        W::tag(b'C')
            .u8(0)
            .u64(0x16_B374_D900)
            .u64(0x16_B374_D930)
            .u64(760_000_000_000_000)
            .done(),
    ]
}

fn wide_insert() -> Vec<Bytes> {
    let big = vec![b'x'; 2048];
    let mut cols: Vec<Option<&[u8]>> = vec![Some(b"123456789"), Some(b"2026-04-20 10:11:12+00")];
    cols.extend(std::iter::repeat_n(Some(&b"some short text"[..]), 16));
    cols.push(None);
    cols.push(Some(&big));
    vec![W::tag(b'I').u32(16_500).u8(b'N').tuple(&cols).done()]
}

/// Touches every value so lazy iteration is measured, not skipped.
fn walk(tuple: &TupleData) -> usize {
    tuple
        .iter()
        .map(|c| match c {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => b.len(),
            ColumnValue::Null | ColumnValue::UnchangedToast => 1,
        })
        .sum()
}

fn walk_ref(tuple: &TupleData) -> usize {
    tuple
        .iter_ref()
        .map(|c| match c {
            ColumnRef::Text(b) | ColumnRef::Binary(b) => b.len(),
            ColumnRef::Null | ColumnRef::UnchangedToast => 1,
        })
        .sum()
}

fn collect(tuple: &TupleData) -> usize {
    let values: Vec<ColumnValue> = tuple.iter().collect();
    values.len()
}

fn decode_all(messages: &[Bytes], visit: fn(&TupleData) -> usize) -> usize {
    let ctx = DecodeContext::new(4);
    let mut seen = 0;
    for m in messages {
        match decode(m.clone(), ctx) {
            Ok(PgOutputMessage::Insert(i)) => seen += visit(&i.new_tuple),
            Ok(PgOutputMessage::Update(u)) => seen += visit(&u.new_tuple),
            Ok(_) => seen += 1,
            Err(e) => panic!("benchmark input must decode: {e}"),
        }
    }
    seen
}

fn bench(c: &mut Criterion) {
    for (name, messages) in [
        ("pgbench_txn", pgbench_transaction()),
        ("wide_insert_2kB", wide_insert()),
    ] {
        let bytes: usize = messages.iter().map(Bytes::len).sum();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("decode", |b| {
            b.iter(|| decode_all(black_box(&messages), |_| 0))
        });
        group.bench_function("decode_walk", |b| {
            b.iter(|| decode_all(black_box(&messages), walk))
        });
        group.bench_function("decode_walk_ref", |b| {
            b.iter(|| decode_all(black_box(&messages), walk_ref))
        });
        group.bench_function("decode_collect", |b| {
            b.iter(|| decode_all(black_box(&messages), collect))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
