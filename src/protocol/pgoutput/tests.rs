//! Tests of [`decode`] from hand-encoded messages laid out as in the
//! PostgreSQL manual's "Logical Replication Message Formats".

use bytes::Bytes;

use super::*;

/// Builds a message field by field, big-endian as on the wire.
#[derive(Default, Clone)]
struct W(Vec<u8>);

impl W {
    fn tag(c: u8) -> W {
        W(vec![c])
    }
    fn u8(mut self, v: u8) -> W {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> W {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> W {
        self.0.extend_from_slice(v);
        self
    }
    fn str(self, s: &str) -> W {
        self.raw(s.as_bytes()).u8(0)
    }
    /// A TupleData: `None` is null, `Some(b"\xff")` alone is unchanged
    /// TOAST in these tests' shorthand, anything else text.
    fn text_tuple(mut self, cols: &[Option<&[u8]>]) -> W {
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
    fn bytes(&self) -> Bytes {
        Bytes::from(self.0.clone())
    }
}

fn v(version: u32) -> DecodeContext {
    DecodeContext::new(version)
}

fn streamed(version: u32) -> DecodeContext {
    DecodeContext {
        in_streamed_txn: true,
        ..DecodeContext::new(version)
    }
}

fn dec(w: &W, ctx: DecodeContext) -> Result<PgOutputMessage, ProtocolError> {
    decode(w.bytes(), ctx)
}

const XID_IN_STREAM: u32 = 0xDEAD_BEEF;

/// Prepends the streamed xid after the type byte, as pgoutput does inside
/// a streamed chunk.
fn with_stream_xid(w: &W) -> W {
    let mut out = W(w.0.get(..1).unwrap_or_default().to_vec()).u32(XID_IN_STREAM);
    out.0.extend_from_slice(w.0.get(1..).unwrap_or_default());
    out
}

fn begin() -> W {
    W::tag(b'B').u64(0x16_B374_D848).i64(1_000_000).u32(742)
}
fn commit() -> W {
    W::tag(b'C').u8(0).u64(0x100).u64(0x128).i64(-7)
}
fn origin() -> W {
    W::tag(b'O').u64(0x99).str("node_a")
}
fn relation() -> W {
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
fn type_msg() -> W {
    W::tag(b'Y').u32(70000).str("").str("mood")
}
fn insert() -> W {
    W::tag(b'I')
        .u32(16384)
        .u8(b'N')
        .text_tuple(&[Some(b"1"), None, Some(b"\xff")])
}
fn update_plain() -> W {
    W::tag(b'U')
        .u32(16384)
        .u8(b'N')
        .text_tuple(&[Some(b"1"), Some(b"x")])
}
fn update_key() -> W {
    W::tag(b'U')
        .u32(16384)
        .u8(b'K')
        .text_tuple(&[Some(b"1"), None])
        .u8(b'N')
        .text_tuple(&[Some(b"2"), Some(b"\xff")])
}
fn update_full() -> W {
    W::tag(b'U')
        .u32(16384)
        .u8(b'O')
        .text_tuple(&[Some(b"1"), Some(b"old")])
        .u8(b'N')
        .text_tuple(&[Some(b"1"), Some(b"new")])
}
fn delete_key() -> W {
    W::tag(b'D')
        .u32(16384)
        .u8(b'K')
        .text_tuple(&[Some(b"1"), None])
}
fn delete_full() -> W {
    W::tag(b'D')
        .u32(16384)
        .u8(b'O')
        .text_tuple(&[Some(b"1"), Some(b"x")])
}
fn truncate() -> W {
    W::tag(b'T').i32(2).u8(3).u32(16384).u32(16390)
}
fn message(transactional: bool) -> W {
    W::tag(b'M')
        .u8(u8::from(transactional))
        .u64(0x77)
        .str("pgmigrate")
        .i32(5)
        .raw(b"hello")
}
fn stream_start() -> W {
    W::tag(b'S').u32(900).u8(1)
}
fn stream_stop() -> W {
    W::tag(b'E')
}
fn stream_commit() -> W {
    W::tag(b'c').u32(900).u8(0).u64(0x200).u64(0x230).i64(55)
}
fn stream_abort() -> W {
    W::tag(b'A').u32(900).u32(901)
}
fn stream_abort_parallel() -> W {
    stream_abort().u64(0x300).i64(66)
}
fn begin_prepare() -> W {
    W::tag(b'b')
        .u64(0x400)
        .u64(0x430)
        .i64(77)
        .u32(1000)
        .str("gid-1")
}
fn prepare_msg(tag: u8) -> W {
    W::tag(tag)
        .u8(0)
        .u64(0x400)
        .u64(0x430)
        .i64(77)
        .u32(1000)
        .str("gid-1")
}
fn commit_prepared() -> W {
    W::tag(b'K')
        .u8(0)
        .u64(0x500)
        .u64(0x530)
        .i64(88)
        .u32(1000)
        .str("gid-1")
}
fn rollback_prepared() -> W {
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
fn samples() -> Vec<(&'static str, DecodeContext, W)> {
    let mut out = vec![
        ("begin", v(1), begin()),
        ("commit", v(1), commit()),
        ("origin", v(1), origin()),
        ("relation", v(1), relation()),
        ("type", v(1), type_msg()),
        ("insert", v(1), insert()),
        ("update", v(1), update_plain()),
        ("update K", v(1), update_key()),
        ("update O", v(1), update_full()),
        ("delete K", v(1), delete_key()),
        ("delete O", v(1), delete_full()),
        ("truncate", v(1), truncate()),
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
        ("streamed relation", relation()),
        ("streamed type", type_msg()),
        ("streamed insert", insert()),
        ("streamed update", update_key()),
        ("streamed delete", delete_full()),
        ("streamed truncate", truncate()),
        ("streamed message", message(true)),
    ] {
        out.push((name, streamed(2), with_stream_xid(&w)));
    }
    out
}

fn texts(t: &TupleData) -> Vec<ColumnValue> {
    t.iter().collect()
}

fn text(s: &'static [u8]) -> ColumnValue {
    ColumnValue::Text(Bytes::from_static(s))
}

#[test]
fn every_sample_decodes_in_every_version_that_has_it() {
    for (name, ctx, w) in samples() {
        for version in ctx.protocol_version..=MAX_PROTOCOL_VERSION {
            let ctx = DecodeContext {
                protocol_version: version,
                ..ctx
            };
            let result = dec(&w, ctx);
            assert!(result.is_ok(), "{name} v{version}: {result:?}");
        }
    }
}

#[test]
fn begin_commit_origin() {
    assert_eq!(
        dec(&begin(), v(1)),
        Ok(PgOutputMessage::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_time: PgTimestamp(1_000_000),
            xid: Xid(742),
        }))
    );
    assert_eq!(
        dec(&commit(), v(1)),
        Ok(PgOutputMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(0x100),
            end_lsn: Lsn(0x128),
            commit_time: PgTimestamp(-7),
        }))
    );
    assert_eq!(
        dec(&origin(), v(1)),
        Ok(PgOutputMessage::Origin(Origin {
            commit_lsn: Lsn(0x99),
            name: "node_a".into(),
        }))
    );
}

#[test]
fn relation_and_type() {
    assert_eq!(
        dec(&relation(), v(1)),
        Ok(PgOutputMessage::Relation(Relation {
            xid: None,
            relation_id: RelationId(16384),
            namespace: "public".into(),
            name: "pgbench_accounts".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "aid".into(),
                    type_oid: Oid(23),
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "filler".into(),
                    type_oid: Oid(1042),
                    type_modifier: 88,
                },
            ],
        }))
    );
    for (byte, identity) in [
        (b'd', ReplicaIdentity::Default),
        (b'n', ReplicaIdentity::Nothing),
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        let w = W::tag(b'R').u32(1).str("s").str("t").u8(byte).i16(0);
        let Ok(PgOutputMessage::Relation(rel)) = dec(&w, v(1)) else {
            panic!("relation with identity {byte}");
        };
        assert_eq!(rel.replica_identity, identity);
        assert_eq!(identity.as_char(), char::from(byte));
    }
    let bad = W::tag(b'R').u32(1).str("s").str("t").u8(b'x').i16(0);
    assert!(matches!(
        dec(&bad, v(1)),
        Err(ProtocolError::InvalidValue { offset: 9, .. })
    ));
    let bad_flags = W::tag(b'R').u32(1).str("s").str("t").u8(b'd').i16(1).u8(2);
    assert!(matches!(
        dec(&bad_flags, v(1)),
        Err(ProtocolError::InvalidValue {
            field: "Relation column flags",
            ..
        })
    ));
    let negative = W::tag(b'R').u32(1).str("s").str("t").u8(b'd').i16(-1);
    assert!(matches!(
        dec(&negative, v(1)),
        Err(ProtocolError::NegativeLength { .. })
    ));
    assert_eq!(
        dec(&type_msg(), v(1)),
        Ok(PgOutputMessage::Type(TypeMessage {
            xid: None,
            type_oid: Oid(70000),
            namespace: String::new(),
            name: "mood".into(),
        }))
    );
}

#[test]
fn names_must_be_utf8() {
    let w = W::tag(b'R')
        .u32(1)
        .raw(b"sch\xe9ma\0")
        .str("t")
        .u8(b'd')
        .i16(0);
    assert_eq!(
        dec(&w, v(1)),
        Err(ProtocolError::InvalidUtf8 {
            field: "Relation.namespace",
            offset: 5
        })
    );
    let w = W::tag(b'O').u64(1).raw(b"\xff\0");
    assert!(matches!(
        dec(&w, v(1)),
        Err(ProtocolError::InvalidUtf8 { .. })
    ));
}

#[test]
fn insert_keeps_null_toast_and_text_apart() {
    let Ok(PgOutputMessage::Insert(ins)) = dec(&insert(), v(1)) else {
        panic!("insert");
    };
    assert_eq!(ins.xid, None);
    assert_eq!(ins.relation_id, RelationId(16384));
    assert_eq!(
        texts(&ins.new_tuple),
        vec![text(b"1"), ColumnValue::Null, ColumnValue::UnchangedToast]
    );
    let binary = W::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'b').i32(4).u32(7);
    let Ok(PgOutputMessage::Insert(ins)) = dec(&binary, v(1)) else {
        panic!("binary insert");
    };
    assert_eq!(
        texts(&ins.new_tuple),
        vec![ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 7]))]
    );
    let no_marker = W::tag(b'I').u32(1).u8(b'K').text_tuple(&[]);
    assert!(matches!(
        dec(&no_marker, v(1)),
        Err(ProtocolError::InvalidValue { offset: 5, .. })
    ));
}

#[test]
fn column_values_are_views_of_the_message() {
    let buf = insert().bytes();
    let Ok(PgOutputMessage::Insert(ins)) = decode(buf.clone(), v(1)) else {
        panic!("insert");
    };
    let Some(ColumnValue::Text(first)) = ins.new_tuple.iter().next() else {
        panic!("text column");
    };
    // tag, relid, 'N', ncols, 't', len
    assert_eq!(first.as_ptr(), buf[1 + 4 + 1 + 2 + 1 + 4..].as_ptr());
}

#[test]
fn update_with_and_without_old_tuple() {
    let Ok(PgOutputMessage::Update(u)) = dec(&update_plain(), v(1)) else {
        panic!("update");
    };
    assert_eq!(u.old_tuple, None);
    assert_eq!(texts(&u.new_tuple), vec![text(b"1"), text(b"x")]);

    let Ok(PgOutputMessage::Update(u)) = dec(&update_key(), v(1)) else {
        panic!("update K");
    };
    let Some(OldTuple::Key(old)) = &u.old_tuple else {
        panic!("key old tuple");
    };
    assert_eq!(texts(old), vec![text(b"1"), ColumnValue::Null]);
    assert_eq!(
        texts(&u.new_tuple),
        vec![text(b"2"), ColumnValue::UnchangedToast]
    );

    let Ok(PgOutputMessage::Update(u)) = dec(&update_full(), v(1)) else {
        panic!("update O");
    };
    assert!(matches!(&u.old_tuple, Some(OldTuple::Full(_))));
    assert_eq!(
        u.old_tuple.as_ref().map(|o| texts(o.tuple())),
        Some(vec![text(b"1"), text(b"old")])
    );
    assert_eq!(texts(&u.new_tuple), vec![text(b"1"), text(b"new")]);

    // An old tuple must be followed by 'N'.
    let bad = W::tag(b'U')
        .u32(1)
        .u8(b'K')
        .text_tuple(&[])
        .u8(b'K')
        .text_tuple(&[]);
    assert!(matches!(
        dec(&bad, v(1)),
        Err(ProtocolError::InvalidValue {
            field: "Update new tuple marker",
            offset: 8,
            ..
        })
    ));
}

#[test]
fn delete_needs_an_old_tuple() {
    let Ok(PgOutputMessage::Delete(d)) = dec(&delete_key(), v(1)) else {
        panic!("delete K");
    };
    assert!(matches!(d.old_tuple, OldTuple::Key(_)));
    let Ok(PgOutputMessage::Delete(d)) = dec(&delete_full(), v(1)) else {
        panic!("delete O");
    };
    assert!(matches!(d.old_tuple, OldTuple::Full(_)));
    let bad = W::tag(b'D').u32(1).u8(b'N').text_tuple(&[]);
    assert!(matches!(
        dec(&bad, v(1)),
        Err(ProtocolError::InvalidValue { offset: 5, .. })
    ));
}

#[test]
fn truncate_flags_and_relations() {
    assert_eq!(
        dec(&truncate(), v(1)),
        Ok(PgOutputMessage::Truncate(Truncate {
            xid: None,
            flags: TruncateFlags {
                cascade: true,
                restart_identity: true,
            },
            relation_ids: vec![RelationId(16384), RelationId(16390)],
        }))
    );
    let Ok(PgOutputMessage::Truncate(t)) = dec(&W::tag(b'T').i32(1).u8(2).u32(5), v(1)) else {
        panic!("truncate restart identity");
    };
    assert_eq!(
        t.flags,
        TruncateFlags {
            cascade: false,
            restart_identity: true
        }
    );
    assert!(matches!(
        dec(&W::tag(b'T').i32(0).u8(4), v(1)),
        Err(ProtocolError::InvalidValue {
            field: "Truncate.flags",
            ..
        })
    ));
    assert!(matches!(
        dec(&W::tag(b'T').i32(-1).u8(0), v(1)),
        Err(ProtocolError::NegativeLength { .. })
    ));
    // A huge count with few bytes fails without reserving memory for it.
    assert!(matches!(
        dec(&W::tag(b'T').i32(i32::MAX).u8(0).u32(1), v(1)),
        Err(ProtocolError::Truncated { .. })
    ));
}

#[test]
fn logical_message() {
    let buf = message(false).bytes();
    assert_eq!(
        decode(buf.clone(), v(1)),
        Ok(PgOutputMessage::Message(LogicalMessage {
            xid: None,
            transactional: false,
            lsn: Lsn(0x77),
            prefix: "pgmigrate".into(),
            content: Bytes::from_static(b"hello"),
        }))
    );
    let Ok(PgOutputMessage::Message(m)) = decode(buf.clone(), v(1)) else {
        panic!("message");
    };
    assert_eq!(m.content.as_ptr(), buf[buf.len() - 5..].as_ptr());
    let Ok(PgOutputMessage::Message(m)) = dec(&message(true), v(1)) else {
        panic!("transactional message");
    };
    assert!(m.transactional);
    let bad_flags = W::tag(b'M').u8(2).u64(0).str("p").i32(0);
    assert!(matches!(
        dec(&bad_flags, v(1)),
        Err(ProtocolError::InvalidValue { .. })
    ));
    let negative = W::tag(b'M').u8(0).u64(0).str("p").i32(-1);
    assert!(matches!(
        dec(&negative, v(1)),
        Err(ProtocolError::NegativeLength { .. })
    ));
}

#[test]
fn streamed_changes_carry_the_xid() {
    let xid = Some(Xid(XID_IN_STREAM));
    for w in [
        relation(),
        type_msg(),
        insert(),
        update_key(),
        delete_key(),
        truncate(),
        message(true),
    ] {
        let inside = dec(&with_stream_xid(&w), streamed(2));
        let outside = dec(&w, v(2));
        let got = match &inside {
            Ok(PgOutputMessage::Relation(m)) => m.xid,
            Ok(PgOutputMessage::Type(m)) => m.xid,
            Ok(PgOutputMessage::Insert(m)) => m.xid,
            Ok(PgOutputMessage::Update(m)) => m.xid,
            Ok(PgOutputMessage::Delete(m)) => m.xid,
            Ok(PgOutputMessage::Truncate(m)) => m.xid,
            Ok(PgOutputMessage::Message(m)) => m.xid,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got, xid);
        // Apart from the xid, the same message.
        let strip = |m: Result<PgOutputMessage, ProtocolError>| match m {
            Ok(PgOutputMessage::Relation(m)) => format!("{:?}", Relation { xid: None, ..m }),
            Ok(PgOutputMessage::Type(m)) => format!("{:?}", TypeMessage { xid: None, ..m }),
            Ok(PgOutputMessage::Insert(m)) => format!("{:?}", Insert { xid: None, ..m }),
            Ok(PgOutputMessage::Update(m)) => format!("{:?}", Update { xid: None, ..m }),
            Ok(PgOutputMessage::Delete(m)) => format!("{:?}", Delete { xid: None, ..m }),
            Ok(PgOutputMessage::Truncate(m)) => format!("{:?}", Truncate { xid: None, ..m }),
            Ok(PgOutputMessage::Message(m)) => format!("{:?}", LogicalMessage { xid: None, ..m }),
            other => format!("{other:?}"),
        };
        assert_eq!(strip(inside), strip(outside));
        // Decoding streamed bytes as if not streamed must not succeed
        // silently with the same result.
        assert_ne!(dec(&with_stream_xid(&w), v(2)), dec(&w, v(2)));
    }
    // Origin has no xid even inside a stream.
    assert!(matches!(
        dec(&origin(), streamed(2)),
        Ok(PgOutputMessage::Origin(_))
    ));
}

#[test]
fn stream_messages() {
    assert_eq!(
        dec(&stream_start(), v(2)),
        Ok(PgOutputMessage::StreamStart(StreamStart {
            xid: Xid(900),
            first_segment: true,
        }))
    );
    assert!(matches!(
        dec(&W::tag(b'S').u32(900).u8(0), v(2)),
        Ok(PgOutputMessage::StreamStart(StreamStart {
            first_segment: false,
            ..
        }))
    ));
    assert!(matches!(
        dec(&W::tag(b'S').u32(900).u8(2), v(2)),
        Err(ProtocolError::InvalidValue { offset: 5, .. })
    ));
    assert_eq!(
        dec(&stream_stop(), streamed(2)),
        Ok(PgOutputMessage::StreamStop)
    );
    assert_eq!(
        dec(&stream_commit(), v(2)),
        Ok(PgOutputMessage::StreamCommit(StreamCommit {
            xid: Xid(900),
            flags: 0,
            commit_lsn: Lsn(0x200),
            end_lsn: Lsn(0x230),
            commit_time: PgTimestamp(55),
        }))
    );
    let plain_abort = Ok(PgOutputMessage::StreamAbort(StreamAbort {
        xid: Xid(900),
        subxid: Xid(901),
        abort_info: None,
    }));
    assert_eq!(dec(&stream_abort(), v(2)), plain_abort);
    // Version 4 without parallel streaming still sends the short form…
    assert_eq!(dec(&stream_abort(), v(4)), plain_abort);
    assert!(matches!(
        dec(&stream_abort_parallel(), v(4)),
        Err(ProtocolError::TrailingBytes {
            offset: 9,
            count: 16,
            ..
        })
    ));
    // …and with it, the abort LSN and time.
    let parallel = v(4).with_parallel_streaming(true);
    assert_eq!(
        dec(&stream_abort_parallel(), parallel),
        Ok(PgOutputMessage::StreamAbort(StreamAbort {
            xid: Xid(900),
            subxid: Xid(901),
            abort_info: Some(AbortInfo {
                abort_lsn: Lsn(0x300),
                abort_time: PgTimestamp(66),
            }),
        }))
    );
    assert!(matches!(
        dec(&stream_abort(), parallel),
        Err(ProtocolError::Truncated {
            field: "Stream Abort.abort_lsn",
            offset: 9,
            ..
        })
    ));
}

#[test]
fn two_phase_messages() {
    assert_eq!(
        dec(&begin_prepare(), v(3)),
        Ok(PgOutputMessage::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(0x400),
            end_lsn: Lsn(0x430),
            prepare_time: PgTimestamp(77),
            xid: Xid(1000),
            gid: "gid-1".into(),
        }))
    );
    let prepared = Prepare {
        flags: 0,
        prepare_lsn: Lsn(0x400),
        end_lsn: Lsn(0x430),
        prepare_time: PgTimestamp(77),
        xid: Xid(1000),
        gid: "gid-1".into(),
    };
    assert_eq!(
        dec(&prepare_msg(b'P'), v(3)),
        Ok(PgOutputMessage::Prepare(prepared.clone()))
    );
    assert_eq!(
        dec(&prepare_msg(b'p'), v(3)),
        Ok(PgOutputMessage::StreamPrepare(prepared))
    );
    assert_eq!(
        dec(&commit_prepared(), v(3)),
        Ok(PgOutputMessage::CommitPrepared(CommitPrepared {
            flags: 0,
            commit_lsn: Lsn(0x500),
            end_lsn: Lsn(0x530),
            commit_time: PgTimestamp(88),
            xid: Xid(1000),
            gid: "gid-1".into(),
        }))
    );
    assert_eq!(
        dec(&rollback_prepared(), v(3)),
        Ok(PgOutputMessage::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(0x430),
            rollback_end_lsn: Lsn(0x600),
            prepare_time: PgTimestamp(77),
            rollback_time: PgTimestamp(99),
            xid: Xid(1000),
            gid: "gid-1".into(),
        }))
    );
}

#[test]
fn messages_newer_than_the_version_are_rejected() {
    for (w, min) in [
        (stream_start(), 2),
        (stream_commit(), 2),
        (stream_abort(), 2),
        (begin_prepare(), 3),
        (prepare_msg(b'P'), 3),
        (prepare_msg(b'p'), 3),
        (commit_prepared(), 3),
        (rollback_prepared(), 3),
    ] {
        for version in 1..min {
            assert!(
                matches!(
                    dec(&w, v(version)),
                    Err(ProtocolError::UnsupportedInVersion { min_version, .. }) if min_version == min
                ),
                "{:?} v{version}",
                w.0.first()
            );
        }
    }
    assert!(matches!(
        dec(&stream_stop(), v(1)),
        Err(ProtocolError::UnsupportedInVersion { .. })
    ));
}

#[test]
fn messages_out_of_place_are_rejected() {
    for w in [
        begin(),
        commit(),
        stream_start(),
        stream_commit(),
        stream_abort(),
        begin_prepare(),
        prepare_msg(b'P'),
        prepare_msg(b'p'),
        commit_prepared(),
        rollback_prepared(),
    ] {
        assert!(
            matches!(
                dec(&w, streamed(3)),
                Err(ProtocolError::UnexpectedInState { .. })
            ),
            "{:?}",
            w.0.first()
        );
    }
    assert!(matches!(
        dec(&stream_stop(), v(2)),
        Err(ProtocolError::UnexpectedInState { .. })
    ));
}

#[test]
fn inconsistent_contexts_are_rejected() {
    for ctx in [v(0), v(5), streamed(1), v(3).with_parallel_streaming(true)] {
        assert!(matches!(
            dec(&begin(), ctx),
            Err(ProtocolError::InvalidContext(_))
        ));
    }
}

#[test]
fn track_follows_stream_start_and_stop() -> Result<(), ProtocolError> {
    let mut ctx = v(2);
    let chunk = [
        stream_start(),
        with_stream_xid(&insert()),
        stream_stop(),
        stream_commit(),
    ];
    let mut inside = Vec::new();
    for w in &chunk {
        let msg = dec(w, ctx)?;
        ctx.track(&msg);
        inside.push(ctx.in_streamed_txn);
    }
    assert_eq!(inside, vec![true, true, false, false]);
    Ok(())
}

#[test]
fn unknown_and_empty_messages() {
    assert!(matches!(
        decode(Bytes::new(), v(4)),
        Err(ProtocolError::Truncated { offset: 0, .. })
    ));
    let known = b"BCORYIUDTMSEcAbPKrp";
    for tag in (0..=255u8).filter(|t| !known.contains(t)) {
        assert_eq!(
            decode(Bytes::from(vec![tag, 0, 0, 0, 0]), v(4)),
            Err(ProtocolError::UnknownMessage {
                stream: "pgoutput",
                tag,
                offset: 0
            })
        );
    }
}

#[test]
fn every_truncation_is_an_error() {
    for (name, ctx, w) in samples() {
        for len in 0..w.0.len() {
            let prefix = Bytes::copy_from_slice(w.0.get(..len).unwrap_or_default());
            let result = decode(prefix, ctx);
            assert!(
                result.is_err(),
                "{name} cut to {len} bytes decoded: {result:?}"
            );
        }
    }
}

#[test]
fn every_trailing_byte_is_an_error() {
    for (name, ctx, w) in samples() {
        let long = w.clone().u8(0);
        let result = dec(&long, ctx);
        assert!(
            matches!(result, Err(ProtocolError::TrailingBytes { count: 1, .. })),
            "{name} with a trailing byte: {result:?}"
        );
    }
}

#[test]
fn errors_name_the_field_and_offset() {
    let err = dec(&W::tag(b'B').u64(1), v(1)).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("truncated Begin.commit_time at offset 9: needs 8 bytes, 0 left")
    );
}

/// xorshift64*: deterministic garbage without a dependency.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.max(1);
    move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn all_contexts() -> Vec<DecodeContext> {
    let mut out = Vec::new();
    for version in 1..=MAX_PROTOCOL_VERSION {
        for in_streamed_txn in [false, true] {
            for parallel_streaming in [false, true] {
                out.push(DecodeContext {
                    protocol_version: version,
                    in_streamed_txn,
                    parallel_streaming,
                });
            }
        }
    }
    out
}

#[test]
fn random_garbage_never_panics() {
    let mut next = rng(0x5EED);
    let known = b"BCORYIUDTMSEcAbPKrp";
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Start most inputs with a real tag so the message bodies get
        // exercised, not just the unknown-tag path.
        if let Some(first) = bytes.first_mut() {
            if next() % 4 != 0 {
                *first = known[(next() as usize) % known.len()];
            }
        }
        let buf = Bytes::from(bytes);
        for ctx in all_contexts() {
            if let Ok(m) = decode(buf.clone(), ctx) {
                assert_tuples_walk_to_the_end(&m);
            }
        }
    }
}

#[test]
fn mutated_samples_never_panic() {
    let mut next = rng(42);
    for (_, _, w) in samples() {
        for _ in 0..500 {
            let mut bytes = w.0.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() as usize) % bytes.len().max(1);
                if let Some(b) = bytes.get_mut(at) {
                    *b = next() as u8;
                }
            }
            let buf = Bytes::from(bytes);
            for ctx in all_contexts() {
                if let Ok(m) = decode(buf.clone(), ctx) {
                    assert_tuples_walk_to_the_end(&m);
                }
            }
        }
    }
}

/// Whatever decodes must be walkable to the end: the lazy iterator yields
/// exactly the validated number of columns.
fn assert_tuples_walk_to_the_end(m: &PgOutputMessage) {
    let tuples: Vec<&TupleData> = match m {
        PgOutputMessage::Insert(i) => vec![&i.new_tuple],
        PgOutputMessage::Update(u) => {
            let mut t = vec![&u.new_tuple];
            t.extend(u.old_tuple.as_ref().map(OldTuple::tuple));
            t
        }
        PgOutputMessage::Delete(d) => vec![d.old_tuple.tuple()],
        _ => Vec::new(),
    };
    for t in tuples {
        assert_eq!(t.iter().count(), t.len());
    }
}
