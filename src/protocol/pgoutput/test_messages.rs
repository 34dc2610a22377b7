//! Hand-encoded pgoutput messages for the decoder's tests, laid out field
//! by field as in the PostgreSQL manual's "Logical Replication Message
//! Formats".

use bytes::Bytes;

use super::*;

/// Builds a message field by field, big-endian as on the wire.
#[derive(Default, Clone)]
pub(super) struct W(pub(super) Vec<u8>);

impl W {
    pub(super) fn tag(c: u8) -> W {
        W(vec![c])
    }
    pub(super) fn u8(mut self, v: u8) -> W {
        self.0.push(v);
        self
    }
    pub(super) fn i16(mut self, v: i16) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u32(mut self, v: u32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn i32(mut self, v: i32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u64(mut self, v: u64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn i64(mut self, v: i64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn raw(mut self, v: &[u8]) -> W {
        self.0.extend_from_slice(v);
        self
    }
    pub(super) fn str(self, s: &str) -> W {
        self.raw(s.as_bytes()).u8(0)
    }
    /// A TupleData: `None` is null, `Some(b"\xff")` alone is unchanged
    /// TOAST in these tests' shorthand, anything else text.
    pub(super) fn text_tuple(mut self, cols: &[Option<&[u8]>]) -> W {
        self = self.i16(cols.len() as i16);
        for c in cols {
            self = match c {
                None => self.u8(b'n'),
                Some(b"\xff") => self.u8(b'u'),
                Some(v) => self.u8(b't').i32(v.len() as i32).raw(v),
            };
        }
        self
    }
    pub(super) fn bytes(&self) -> Bytes {
        Bytes::from(self.0.clone())
    }
}

pub(super) fn v(version: u32) -> DecodeContext {
    DecodeContext::new(version)
}

pub(super) fn streamed(version: u32) -> DecodeContext {
    DecodeContext {
        in_streamed_txn: true,
        ..DecodeContext::new(version)
    }
}

pub(super) fn dec(w: &W, ctx: DecodeContext) -> Result<PgOutputMessage, ProtocolError> {
    decode(w.bytes(), ctx)
}

pub(super) const XID_IN_STREAM: u32 = 0xDEAD_BEEF;

/// Prepends the streamed xid after the type byte, as pgoutput does inside
/// a streamed chunk.
pub(super) fn with_stream_xid(w: &W) -> W {
    let mut out = W(w.0.get(..1).unwrap_or_default().to_vec()).u32(XID_IN_STREAM);
    out.0.extend_from_slice(w.0.get(1..).unwrap_or_default());
    out
}

pub(super) fn begin() -> W {
    W::tag(b'B').u64(0x16_B374_D848).i64(1_000_000).u32(742)
}
pub(super) fn commit() -> W {
    W::tag(b'C').u8(0).u64(0x100).u64(0x128).i64(-7)
}
pub(super) fn origin() -> W {
    W::tag(b'O').u64(0x99).str("node_a")
}
pub(super) fn relation_msg() -> W {
    W::tag(b'R')
        .u32(16384)
        .str("public")
        .str("pgbench_accounts")
        .u8(b'd')
        .i16(2)
        .u8(1)
        .str("aid")
        .u32(23)
        .i32(-1)
        .u8(0)
        .str("filler")
        .u32(1042)
        .i32(88)
}
pub(super) fn type_msg() -> W {
    W::tag(b'Y').u32(70000).str("").str("mood")
}
pub(super) fn insert() -> W {
    W::tag(b'I')
        .u32(16384)
        .u8(b'N')
        .text_tuple(&[Some(b"1"), None, Some(b"\xff")])
}
pub(super) fn update_plain() -> W {
    W::tag(b'U')
        .u32(16384)
        .u8(b'N')
        .text_tuple(&[Some(b"1"), Some(b"x")])
}
pub(super) fn update_key() -> W {
    W::tag(b'U')
        .u32(16384)
        .u8(b'K')
        .text_tuple(&[Some(b"1"), None])
        .u8(b'N')
        .text_tuple(&[Some(b"2"), Some(b"\xff")])
}
pub(super) fn update_full() -> W {
    W::tag(b'U')
        .u32(16384)
        .u8(b'O')
        .text_tuple(&[Some(b"1"), Some(b"old")])
        .u8(b'N')
        .text_tuple(&[Some(b"1"), Some(b"new")])
}
pub(super) fn delete_key() -> W {
    W::tag(b'D')
        .u32(16384)
        .u8(b'K')
        .text_tuple(&[Some(b"1"), None])
}
pub(super) fn delete_full() -> W {
    W::tag(b'D')
        .u32(16384)
        .u8(b'O')
        .text_tuple(&[Some(b"1"), Some(b"x")])
}
pub(super) fn truncate_msg() -> W {
    W::tag(b'T').i32(2).u8(3).u32(16384).u32(16390)
}
pub(super) fn message(transactional: bool) -> W {
    W::tag(b'M')
        .u8(u8::from(transactional))
        .u64(0x77)
        .str("pgmigrate")
        .i32(5)
        .raw(b"hello")
}
pub(super) fn stream_start() -> W {
    W::tag(b'S').u32(900).u8(1)
}
pub(super) fn stream_stop() -> W {
    W::tag(b'E')
}
pub(super) fn stream_commit() -> W {
    W::tag(b'c').u32(900).u8(0).u64(0x200).u64(0x230).i64(55)
}
pub(super) fn stream_abort() -> W {
    W::tag(b'A').u32(900).u32(901)
}
pub(super) fn stream_abort_parallel() -> W {
    stream_abort().u64(0x300).i64(66)
}
pub(super) fn begin_prepare() -> W {
    W::tag(b'b')
        .u64(0x400)
        .u64(0x430)
        .i64(77)
        .u32(1000)
        .str("gid-1")
}
pub(super) fn prepare_msg(tag: u8) -> W {
    W::tag(tag)
        .u8(0)
        .u64(0x400)
        .u64(0x430)
        .i64(77)
        .u32(1000)
        .str("gid-1")
}
pub(super) fn commit_prepared() -> W {
    W::tag(b'K')
        .u8(0)
        .u64(0x500)
        .u64(0x530)
        .i64(88)
        .u32(1000)
        .str("gid-1")
}
pub(super) fn rollback_prepared() -> W {
    W::tag(b'r')
        .u8(0)
        .u64(0x430)
        .u64(0x600)
        .i64(77)
        .i64(99)
        .u32(1000)
        .str("gid-1")
}

/// Every valid message with a context that accepts it.
pub(super) fn samples() -> Vec<(&'static str, DecodeContext, W)> {
    let mut out = vec![
        ("begin", v(1), begin()),
        ("commit", v(1), commit()),
        ("origin", v(1), origin()),
        ("relation", v(1), relation_msg()),
        ("type", v(1), type_msg()),
        ("insert", v(1), insert()),
        ("update", v(1), update_plain()),
        ("update K", v(1), update_key()),
        ("update O", v(1), update_full()),
        ("delete K", v(1), delete_key()),
        ("delete O", v(1), delete_full()),
        ("truncate", v(1), truncate_msg()),
        ("message", v(1), message(true)),
        ("stream start", v(2), stream_start()),
        ("stream stop", streamed(2), stream_stop()),
        ("stream commit", v(2), stream_commit()),
        ("stream abort", v(2), stream_abort()),
        (
            "stream abort parallel",
            v(4).with_parallel_streaming(true),
            stream_abort_parallel(),
        ),
        ("begin prepare", v(3), begin_prepare()),
        ("prepare", v(3), prepare_msg(b'P')),
        ("stream prepare", v(3), prepare_msg(b'p')),
        ("commit prepared", v(3), commit_prepared()),
        ("rollback prepared", v(3), rollback_prepared()),
        ("origin in stream", streamed(2), origin()),
    ];
    for (name, w) in [
        ("streamed relation", relation_msg()),
        ("streamed type", type_msg()),
        ("streamed insert", insert()),
        ("streamed update", update_key()),
        ("streamed delete", delete_full()),
        ("streamed truncate", truncate_msg()),
        ("streamed message", message(true)),
    ] {
        out.push((name, streamed(2), with_stream_xid(&w)));
    }
    out
}
