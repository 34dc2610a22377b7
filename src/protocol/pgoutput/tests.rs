//! Tests of [`decode`] from hand-encoded messages laid out as in the
//! PostgreSQL manual's "Logical Replication Message Formats".

use bytes::Bytes;

use super::test_messages::*;
use super::*;

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
        dec(&relation_msg(), v(1)),
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
        dec(&truncate_msg(), v(1)),
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
        relation_msg(),
        type_msg(),
        insert(),
        update_key(),
        delete_key(),
        truncate_msg(),
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
            if !next().is_multiple_of(4) {
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
        assert_eq!(t.iter_ref().count(), t.len());
    }
}
