//! Decoder of the pgoutput logical replication messages, protocol
//! versions 1–4.
//!
//! [`decode`] is a pure function from one XLogData payload to one
//! [`PgOutputMessage`]. Two facts it cannot see in the bytes come from the
//! caller in [`DecodeContext`]: whether the message is inside a streamed
//! transaction chunk (then Relation, Type, DML and Message carry an extra
//! xid), and whether streaming is parallel (then Stream Abort carries the
//! abort LSN and time). [`DecodeContext::track`] keeps the first one up to
//! date from the decoded messages themselves.

mod messages;
mod tuple;

#[cfg(test)]
mod test_messages;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use self::messages::{
    AbortInfo, Begin, BeginPrepare, Commit, CommitPrepared, Delete, Insert, LogicalMessage,
    OldTuple, Origin, PgOutputMessage, Prepare, Relation, RelationColumn, ReplicaIdentity,
    RollbackPrepared, StreamAbort, StreamCommit, StreamStart, Truncate, TruncateFlags, TypeMessage,
    Update,
};
pub use self::tuple::{ColumnRef, ColumnValue, TupleData, TupleIter, TupleRefIter};
use super::error::ProtocolError;
use super::lsn::{Lsn, Oid, RelationId, Xid};
use super::reader::Reader;
use super::timestamp::PgTimestamp;

/// The oldest pgoutput `proto_version` this decoder reads.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The newest pgoutput `proto_version` this decoder reads.
pub const MAX_PROTOCOL_VERSION: u32 = 4;
/// The first version with streamed transactions (PostgreSQL 14).
pub const STREAMING_PROTOCOL_VERSION: u32 = 2;
/// The first version with two-phase messages (PostgreSQL 15).
pub const TWO_PHASE_PROTOCOL_VERSION: u32 = 3;
/// The first version with parallel streaming (PostgreSQL 16).
pub const PARALLEL_STREAMING_PROTOCOL_VERSION: u32 = 4;

const TRUNCATE_CASCADE: u8 = 1;
const TRUNCATE_RESTART_IDENTITY: u8 = 2;
const MESSAGE_TRANSACTIONAL: u8 = 1;
const COLUMN_IS_KEY: u8 = 1;

/// What the decoder must know about the stream that the bytes do not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// The `proto_version` given to `START_REPLICATION`.
    pub protocol_version: u32,
    /// Between a Stream Start and its Stream Stop.
    pub in_streamed_txn: bool,
    /// `streaming 'parallel'` was requested (needs version 4): Stream Abort
    /// then carries the abort LSN and time.
    pub parallel_streaming: bool,
}

impl DecodeContext {
    /// A context for a stream of `protocol_version`, outside any streamed
    /// transaction, without parallel streaming.
    pub fn new(protocol_version: u32) -> DecodeContext {
        DecodeContext {
            protocol_version,
            in_streamed_txn: false,
            parallel_streaming: false,
        }
    }

    /// The same context with `streaming 'parallel'` on or off.
    pub fn with_parallel_streaming(self, parallel_streaming: bool) -> DecodeContext {
        DecodeContext {
            parallel_streaming,
            ..self
        }
    }

    /// Updates `in_streamed_txn` after `message` was decoded: Stream Start
    /// enters a streamed chunk, Stream Stop leaves it.
    pub fn track(&mut self, message: &PgOutputMessage) {
        match message {
            PgOutputMessage::StreamStart(_) => self.in_streamed_txn = true,
            PgOutputMessage::StreamStop => self.in_streamed_txn = false,
            _ => {}
        }
    }

    fn check(&self) -> Result<(), ProtocolError> {
        if !(MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&self.protocol_version) {
            return Err(ProtocolError::InvalidContext(
                "protocol_version must be between 1 and 4",
            ));
        }
        if self.in_streamed_txn && self.protocol_version < STREAMING_PROTOCOL_VERSION {
            return Err(ProtocolError::InvalidContext(
                "in_streamed_txn needs protocol_version 2 or later",
            ));
        }
        if self.parallel_streaming && self.protocol_version < PARALLEL_STREAMING_PROTOCOL_VERSION {
            return Err(ProtocolError::InvalidContext(
                "parallel_streaming needs protocol_version 4 or later",
            ));
        }
        Ok(())
    }
}

/// Where a message kind may appear relative to streamed chunks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Outside streamed chunks only (transaction boundaries).
    Outside,
    /// Inside a streamed chunk only.
    Inside,
    /// Either (changes, schema, origin).
    Anywhere,
}

/// The static facts about a message type byte.
struct Kind {
    name: &'static str,
    min_version: u32,
    placement: Placement,
}

fn kind_of(tag: u8) -> Option<Kind> {
    use Placement::{Anywhere, Inside, Outside};
    let (name, min_version, placement) = match tag {
        b'B' => ("Begin", 1, Outside),
        b'C' => ("Commit", 1, Outside),
        b'O' => ("Origin", 1, Anywhere),
        b'R' => ("Relation", 1, Anywhere),
        b'Y' => ("Type", 1, Anywhere),
        b'I' => ("Insert", 1, Anywhere),
        b'U' => ("Update", 1, Anywhere),
        b'D' => ("Delete", 1, Anywhere),
        b'T' => ("Truncate", 1, Anywhere),
        b'M' => ("Message", 1, Anywhere),
        b'S' => ("Stream Start", STREAMING_PROTOCOL_VERSION, Outside),
        b'E' => ("Stream Stop", STREAMING_PROTOCOL_VERSION, Inside),
        b'c' => ("Stream Commit", STREAMING_PROTOCOL_VERSION, Outside),
        b'A' => ("Stream Abort", STREAMING_PROTOCOL_VERSION, Outside),
        b'b' => ("Begin Prepare", TWO_PHASE_PROTOCOL_VERSION, Outside),
        b'P' => ("Prepare", TWO_PHASE_PROTOCOL_VERSION, Outside),
        b'K' => ("Commit Prepared", TWO_PHASE_PROTOCOL_VERSION, Outside),
        b'r' => ("Rollback Prepared", TWO_PHASE_PROTOCOL_VERSION, Outside),
        b'p' => ("Stream Prepare", TWO_PHASE_PROTOCOL_VERSION, Outside),
        _ => return None,
    };
    Some(Kind {
        name,
        min_version,
        placement,
    })
}

/// Decodes one pgoutput message (an XLogData payload).
///
/// Column values and Message content are views of `buf`. Any truncated,
/// overlong, unknown or out-of-place input is a [`ProtocolError`] naming
/// the field and offset.
pub fn decode(buf: Bytes, ctx: DecodeContext) -> Result<PgOutputMessage, ProtocolError> {
    ctx.check()?;
    let mut r = Reader::new(&buf);
    let tag = r.u8("pgoutput message type")?;
    let kind = allowed_kind(tag, ctx)?;
    // Inside a streamed chunk, every message that may appear there except
    // Origin and Stream Stop names its transaction first.
    let xid = if ctx.in_streamed_txn && !matches!(tag, b'O' | b'E') {
        Some(read_xid(&mut r, "streamed transaction xid")?)
    } else {
        None
    };
    let message = decode_body(tag, &mut r, ctx, xid)?;
    r.finish(kind.name)?;
    Ok(message)
}

/// The kind of message `tag` names, if this protocol version has it and it
/// may stand where the stream is (inside or outside a streamed transaction).
fn allowed_kind(tag: u8, ctx: DecodeContext) -> Result<Kind, ProtocolError> {
    let kind = kind_of(tag).ok_or(ProtocolError::UnknownMessage {
        stream: "pgoutput",
        tag,
        offset: 0,
    })?;
    if ctx.protocol_version < kind.min_version {
        return Err(ProtocolError::UnsupportedInVersion {
            message: kind.name,
            version: ctx.protocol_version,
            min_version: kind.min_version,
        });
    }
    let misplaced = match kind.placement {
        Placement::Outside => ctx
            .in_streamed_txn
            .then_some("inside a streamed transaction"),
        Placement::Inside => (!ctx.in_streamed_txn).then_some("outside a streamed transaction"),
        Placement::Anywhere => None,
    };
    if let Some(where_) = misplaced {
        return Err(ProtocolError::UnexpectedInState {
            message: kind.name,
            where_,
        });
    }
    Ok(kind)
}

/// The fields after the tag (and the streamed xid, read by the caller).
fn decode_body(
    tag: u8,
    r: &mut Reader<'_>,
    ctx: DecodeContext,
    xid: Option<Xid>,
) -> Result<PgOutputMessage, ProtocolError> {
    let message = match tag {
        b'B' => PgOutputMessage::Begin(Begin {
            final_lsn: read_lsn(r, "Begin.final_lsn")?,
            commit_time: read_time(r, "Begin.commit_time")?,
            xid: read_xid(r, "Begin.xid")?,
        }),
        b'C' => PgOutputMessage::Commit(Commit {
            flags: r.u8("Commit.flags")?,
            commit_lsn: read_lsn(r, "Commit.commit_lsn")?,
            end_lsn: read_lsn(r, "Commit.end_lsn")?,
            commit_time: read_time(r, "Commit.commit_time")?,
        }),
        b'O' => PgOutputMessage::Origin(Origin {
            commit_lsn: read_lsn(r, "Origin.commit_lsn")?,
            name: r.cstr("Origin.name")?,
        }),
        b'R' => PgOutputMessage::Relation(relation(r, xid)?),
        b'Y' => PgOutputMessage::Type(TypeMessage {
            xid,
            type_oid: Oid(r.u32("Type.type_oid")?),
            namespace: r.cstr("Type.namespace")?,
            name: r.cstr("Type.name")?,
        }),
        b'I' => {
            let relation_id = read_relation_id(r, "Insert.relation_id")?;
            expect_tag(r, b'N', "Insert tuple marker")?;
            PgOutputMessage::Insert(Insert {
                xid,
                relation_id,
                new_tuple: TupleData::read(r)?,
            })
        }
        b'U' => PgOutputMessage::Update(update(r, xid)?),
        b'D' => {
            let relation_id = read_relation_id(r, "Delete.relation_id")?;
            let old_tuple = match old_tuple(r, "Delete tuple marker")? {
                Some(old) => old,
                None => {
                    return Err(ProtocolError::InvalidValue {
                        field: "Delete tuple marker",
                        offset: r.offset().saturating_sub(1),
                        value: u64::from(b'N'),
                    })
                }
            };
            PgOutputMessage::Delete(Delete {
                xid,
                relation_id,
                old_tuple,
            })
        }
        b'T' => PgOutputMessage::Truncate(truncate(r, xid)?),
        b'M' => PgOutputMessage::Message(logical_message(r, xid)?),
        _ => stream_or_two_phase(tag, r, ctx)?,
    };
    Ok(message)
}

/// The streaming (protocol 2+) and two-phase (3+) messages.
fn stream_or_two_phase(
    tag: u8,
    r: &mut Reader<'_>,
    ctx: DecodeContext,
) -> Result<PgOutputMessage, ProtocolError> {
    let message = match tag {
        b'S' => PgOutputMessage::StreamStart(StreamStart {
            xid: read_xid(r, "Stream Start.xid")?,
            first_segment: r.bool("Stream Start.first_segment")?,
        }),
        b'E' => PgOutputMessage::StreamStop,
        b'c' => PgOutputMessage::StreamCommit(StreamCommit {
            xid: read_xid(r, "Stream Commit.xid")?,
            flags: r.u8("Stream Commit.flags")?,
            commit_lsn: read_lsn(r, "Stream Commit.commit_lsn")?,
            end_lsn: read_lsn(r, "Stream Commit.end_lsn")?,
            commit_time: read_time(r, "Stream Commit.commit_time")?,
        }),
        b'A' => PgOutputMessage::StreamAbort(StreamAbort {
            xid: read_xid(r, "Stream Abort.xid")?,
            subxid: read_xid(r, "Stream Abort.subxid")?,
            abort_info: if ctx.parallel_streaming {
                Some(AbortInfo {
                    abort_lsn: read_lsn(r, "Stream Abort.abort_lsn")?,
                    abort_time: read_time(r, "Stream Abort.abort_time")?,
                })
            } else {
                None
            },
        }),
        b'b' => PgOutputMessage::BeginPrepare(BeginPrepare {
            prepare_lsn: read_lsn(r, "Begin Prepare.prepare_lsn")?,
            end_lsn: read_lsn(r, "Begin Prepare.end_lsn")?,
            prepare_time: read_time(r, "Begin Prepare.prepare_time")?,
            xid: read_xid(r, "Begin Prepare.xid")?,
            gid: r.cstr("Begin Prepare.gid")?,
        }),
        b'P' => PgOutputMessage::Prepare(prepare(r, false)?),
        b'p' => PgOutputMessage::StreamPrepare(prepare(r, true)?),
        b'K' => PgOutputMessage::CommitPrepared(CommitPrepared {
            flags: r.u8("Commit Prepared.flags")?,
            commit_lsn: read_lsn(r, "Commit Prepared.commit_lsn")?,
            end_lsn: read_lsn(r, "Commit Prepared.end_lsn")?,
            commit_time: read_time(r, "Commit Prepared.commit_time")?,
            xid: read_xid(r, "Commit Prepared.xid")?,
            gid: r.cstr("Commit Prepared.gid")?,
        }),
        b'r' => PgOutputMessage::RollbackPrepared(RollbackPrepared {
            flags: r.u8("Rollback Prepared.flags")?,
            prepare_end_lsn: read_lsn(r, "Rollback Prepared.prepare_end_lsn")?,
            rollback_end_lsn: read_lsn(r, "Rollback Prepared.rollback_end_lsn")?,
            prepare_time: read_time(r, "Rollback Prepared.prepare_time")?,
            rollback_time: read_time(r, "Rollback Prepared.rollback_time")?,
            xid: read_xid(r, "Rollback Prepared.xid")?,
            gid: r.cstr("Rollback Prepared.gid")?,
        }),
        _ => {
            // kind_of() accepted the tag, so this arm is unreachable; an
            // error keeps the decoder total without a panic path.
            return Err(ProtocolError::UnknownMessage {
                stream: "pgoutput",
                tag,
                offset: 0,
            });
        }
    };
    Ok(message)
}

fn read_lsn(r: &mut Reader<'_>, field: &'static str) -> Result<Lsn, ProtocolError> {
    r.u64(field).map(Lsn)
}

fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<PgTimestamp, ProtocolError> {
    r.i64(field).map(PgTimestamp)
}

fn read_xid(r: &mut Reader<'_>, field: &'static str) -> Result<Xid, ProtocolError> {
    r.u32(field).map(Xid)
}

fn read_relation_id(r: &mut Reader<'_>, field: &'static str) -> Result<RelationId, ProtocolError> {
    r.u32(field).map(RelationId)
}

fn expect_tag(r: &mut Reader<'_>, want: u8, field: &'static str) -> Result<(), ProtocolError> {
    let offset = r.offset();
    match r.u8(field)? {
        got if got == want => Ok(()),
        got => Err(ProtocolError::InvalidValue {
            field,
            offset,
            value: u64::from(got),
        }),
    }
}

/// Reads the `K`/`O` old tuple if one is next; `None` (nothing consumed
/// but the marker) if the marker is `N`.
fn old_tuple(r: &mut Reader<'_>, field: &'static str) -> Result<Option<OldTuple>, ProtocolError> {
    let offset = r.offset();
    match r.u8(field)? {
        b'K' => Ok(Some(OldTuple::Key(TupleData::read(r)?))),
        b'O' => Ok(Some(OldTuple::Full(TupleData::read(r)?))),
        b'N' => Ok(None),
        other => Err(ProtocolError::InvalidValue {
            field,
            offset,
            value: u64::from(other),
        }),
    }
}

fn update(r: &mut Reader<'_>, xid: Option<Xid>) -> Result<Update, ProtocolError> {
    let relation_id = read_relation_id(r, "Update.relation_id")?;
    let old_tuple = old_tuple(r, "Update tuple marker")?;
    if old_tuple.is_some() {
        expect_tag(r, b'N', "Update new tuple marker")?;
    }
    Ok(Update {
        xid,
        relation_id,
        old_tuple,
        new_tuple: TupleData::read(r)?,
    })
}

/// Flags whose every bit is defined: an unknown bit means a protocol this
/// decoder does not speak, so it is an error rather than ignored.
fn flags(r: &mut Reader<'_>, known: u8, field: &'static str) -> Result<u8, ProtocolError> {
    let offset = r.offset();
    let flags = r.u8(field)?;
    if flags & !known != 0 {
        return Err(ProtocolError::InvalidValue {
            field,
            offset,
            value: u64::from(flags),
        });
    }
    Ok(flags)
}

/// An Int32 count or length that must not be negative.
fn length(r: &mut Reader<'_>, field: &'static str) -> Result<usize, ProtocolError> {
    let offset = r.offset();
    let n = r.i32(field)?;
    usize::try_from(n).map_err(|_| ProtocolError::NegativeLength {
        field,
        offset,
        value: i64::from(n),
    })
}

fn relation(r: &mut Reader<'_>, xid: Option<Xid>) -> Result<Relation, ProtocolError> {
    let relation_id = read_relation_id(r, "Relation.relation_id")?;
    let namespace = r.cstr("Relation.namespace")?;
    let name = r.cstr("Relation.name")?;
    let identity_offset = r.offset();
    let identity = r.u8("Relation.replica_identity")?;
    let replica_identity =
        ReplicaIdentity::from_byte(identity).ok_or(ProtocolError::InvalidValue {
            field: "Relation.replica_identity",
            offset: identity_offset,
            value: u64::from(identity),
        })?;
    let natts_offset = r.offset();
    let natts = r.i16("Relation.column_count")?;
    let natts = usize::try_from(natts).map_err(|_| ProtocolError::NegativeLength {
        field: "Relation.column_count",
        offset: natts_offset,
        value: i64::from(natts),
    })?;
    // flags + empty name's NUL + type oid + typmod; the cap keeps garbage
    // counts from reserving memory the bytes cannot fill.
    const MIN_COLUMN_LEN: usize = 1 + 1 + 4 + 4;
    let mut columns = Vec::with_capacity(natts.min(r.remaining() / MIN_COLUMN_LEN));
    for _ in 0..natts {
        let flags = flags(r, COLUMN_IS_KEY, "Relation column flags")?;
        columns.push(RelationColumn {
            is_key: flags & COLUMN_IS_KEY != 0,
            name: r.cstr("Relation column name")?,
            type_oid: Oid(r.u32("Relation column type_oid")?),
            type_modifier: r.i32("Relation column type_modifier")?,
        });
    }
    Ok(Relation {
        xid,
        relation_id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn truncate(r: &mut Reader<'_>, xid: Option<Xid>) -> Result<Truncate, ProtocolError> {
    let n = length(r, "Truncate.relation_count")?;
    let flags = flags(
        r,
        TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY,
        "Truncate.flags",
    )?;
    // Capped by what the bytes left can hold, so garbage cannot make us
    // reserve gigabytes.
    let mut relation_ids = Vec::with_capacity(n.min(r.remaining() / 4));
    for _ in 0..n {
        relation_ids.push(read_relation_id(r, "Truncate.relation_id")?);
    }
    Ok(Truncate {
        xid,
        flags: TruncateFlags {
            cascade: flags & TRUNCATE_CASCADE != 0,
            restart_identity: flags & TRUNCATE_RESTART_IDENTITY != 0,
        },
        relation_ids,
    })
}

fn logical_message(r: &mut Reader<'_>, xid: Option<Xid>) -> Result<LogicalMessage, ProtocolError> {
    let flags = flags(r, MESSAGE_TRANSACTIONAL, "Message.flags")?;
    let lsn = read_lsn(r, "Message.lsn")?;
    let prefix = r.cstr("Message.prefix")?;
    let len = length(r, "Message.content_length")?;
    Ok(LogicalMessage {
        xid,
        transactional: flags & MESSAGE_TRANSACTIONAL != 0,
        lsn,
        prefix,
        content: r.bytes(len, "Message.content")?,
    })
}

fn prepare(r: &mut Reader<'_>, stream: bool) -> Result<Prepare, ProtocolError> {
    // Field names are spelled per message so errors say which one broke.
    let pick = |plain: &'static str, streamed: &'static str| if stream { streamed } else { plain };
    Ok(Prepare {
        flags: r.u8(pick("Prepare.flags", "Stream Prepare.flags"))?,
        prepare_lsn: read_lsn(r, pick("Prepare.prepare_lsn", "Stream Prepare.prepare_lsn"))?,
        end_lsn: read_lsn(r, pick("Prepare.end_lsn", "Stream Prepare.end_lsn"))?,
        prepare_time: read_time(
            r,
            pick("Prepare.prepare_time", "Stream Prepare.prepare_time"),
        )?,
        xid: read_xid(r, pick("Prepare.xid", "Stream Prepare.xid"))?,
        gid: r.cstr(pick("Prepare.gid", "Stream Prepare.gid"))?,
    })
}
