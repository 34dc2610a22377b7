//! The decoded pgoutput messages: one struct per message kind of protocol
//! versions 1–4, gathered in [`PgOutputMessage`].
//!
//! Field names follow PostgreSQL's `logicalrep_write_*` functions so a
//! reader of `proto.c` finds the same words here.

use bytes::Bytes;

use super::tuple::TupleData;
use crate::protocol::lsn::{Lsn, Oid, RelationId, Xid};
use crate::protocol::timestamp::PgTimestamp;

/// One message of the pgoutput logical replication protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `C`: the transaction started by the last Begin commits.
    Commit(Commit),
    /// `O`: the transaction came from another node (replication origin).
    Origin(Origin),
    /// `R`: a table's schema, sent before the first change to it (and after
    /// every schema change).
    Relation(Relation),
    /// `Y`: a non-built-in data type used by a following Relation.
    Type(TypeMessage),
    /// `I`: a row inserted.
    Insert(Insert),
    /// `U`: a row updated.
    Update(Update),
    /// `D`: a row deleted.
    Delete(Delete),
    /// `T`: tables truncated.
    Truncate(Truncate),
    /// `M`: a `pg_logical_emit_message()` call (needs `messages 'true'`).
    Message(LogicalMessage),
    /// `S`: a chunk of a streamed (in-progress) transaction starts (v2+).
    StreamStart(StreamStart),
    /// `E`: the current streamed chunk ends (v2+).
    StreamStop,
    /// `c`: a streamed transaction commits (v2+).
    StreamCommit(StreamCommit),
    /// `A`: a streamed (sub)transaction aborts (v2+).
    StreamAbort(StreamAbort),
    /// `b`: a transaction that will be prepared starts (v3+, two_phase).
    BeginPrepare(BeginPrepare),
    /// `P`: the transaction started by Begin Prepare is prepared (v3+).
    Prepare(Prepare),
    /// `K`: a prepared transaction commits (v3+).
    CommitPrepared(CommitPrepared),
    /// `r`: a prepared transaction rolls back (v3+).
    RollbackPrepared(RollbackPrepared),
    /// `p`: a streamed transaction is prepared (v3+).
    StreamPrepare(Prepare),
}

impl PgOutputMessage {
    /// The message's name as the PostgreSQL manual spells it, for errors
    /// and logs.
    pub fn name(&self) -> &'static str {
        match self {
            PgOutputMessage::Begin(_) => "Begin",
            PgOutputMessage::Commit(_) => "Commit",
            PgOutputMessage::Origin(_) => "Origin",
            PgOutputMessage::Relation(_) => "Relation",
            PgOutputMessage::Type(_) => "Type",
            PgOutputMessage::Insert(_) => "Insert",
            PgOutputMessage::Update(_) => "Update",
            PgOutputMessage::Delete(_) => "Delete",
            PgOutputMessage::Truncate(_) => "Truncate",
            PgOutputMessage::Message(_) => "Message",
            PgOutputMessage::StreamStart(_) => "Stream Start",
            PgOutputMessage::StreamStop => "Stream Stop",
            PgOutputMessage::StreamCommit(_) => "Stream Commit",
            PgOutputMessage::StreamAbort(_) => "Stream Abort",
            PgOutputMessage::BeginPrepare(_) => "Begin Prepare",
            PgOutputMessage::Prepare(_) => "Prepare",
            PgOutputMessage::CommitPrepared(_) => "Commit Prepared",
            PgOutputMessage::RollbackPrepared(_) => "Rollback Prepared",
            PgOutputMessage::StreamPrepare(_) => "Stream Prepare",
        }
    }
}

/// `B`: Begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record.
    pub final_lsn: Lsn,
    /// Commit time on the source.
    pub commit_time: PgTimestamp,
    /// The transaction's id.
    pub xid: Xid,
}

/// `C`: Commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Flags; currently unused by PostgreSQL (kept as sent).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record: the position to confirm once
    /// the transaction is durably applied.
    pub end_lsn: Lsn,
    /// Commit time on the source.
    pub commit_time: PgTimestamp,
}

/// `O`: Origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The commit LSN on the origin server ([`Lsn::INVALID`] when sent at a
    /// streamed chunk's start).
    pub commit_lsn: Lsn,
    /// The replication origin's name.
    pub name: String,
}

/// A table's replica identity (`pg_class.relreplident`): which old values
/// Update and Delete carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing; updates and deletes cannot be replicated.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// The `relreplident` character.
    pub fn as_char(self) -> char {
        match self {
            ReplicaIdentity::Default => 'd',
            ReplicaIdentity::Nothing => 'n',
            ReplicaIdentity::Full => 'f',
            ReplicaIdentity::Index => 'i',
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            b'd' => Some(ReplicaIdentity::Default),
            b'n' => Some(ReplicaIdentity::Nothing),
            b'f' => Some(ReplicaIdentity::Full),
            b'i' => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// The column is part of the replica identity key.
    pub is_key: bool,
    /// The column's name.
    pub name: String,
    /// The column's data type.
    pub type_oid: Oid,
    /// The type modifier (`atttypmod`), -1 when none.
    pub type_modifier: i32,
}

/// `R`: Relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The table's OID, used by later DML messages.
    pub relation_id: RelationId,
    /// The schema name (`pg_catalog` is sent as an empty string).
    pub namespace: String,
    /// The table name.
    pub name: String,
    /// Which old values Update and Delete carry.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in order; tuples carry one value per column.
    pub columns: Vec<RelationColumn>,
}

/// `Y`: Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The type's OID on the source.
    pub type_oid: Oid,
    /// The schema name (`pg_catalog` is sent as an empty string).
    pub namespace: String,
    /// The type name.
    pub name: String,
}

/// `I`: Insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The table, as announced by a Relation message.
    pub relation_id: RelationId,
    /// The new row.
    pub new_tuple: TupleData,
}

/// The old row values carried by Update and Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity key columns are meaningful (the
    /// others are null).
    Key(TupleData),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData),
}

impl OldTuple {
    /// The tuple, whichever kind it is.
    pub fn tuple(&self) -> &TupleData {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

/// `U`: Update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The table, as announced by a Relation message.
    pub relation_id: RelationId,
    /// Present when the key changed (`K`) or the table is
    /// `REPLICA IDENTITY FULL` (`O`).
    pub old_tuple: Option<OldTuple>,
    /// The new row; unchanged TOAST values are marked, not sent.
    pub new_tuple: TupleData,
}

/// `D`: Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// The table, as announced by a Relation message.
    pub relation_id: RelationId,
    /// The key (`K`) or whole row (`O`) of the deleted row.
    pub old_tuple: OldTuple,
}

/// The options of a Truncate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncateFlags {
    /// `TRUNCATE … CASCADE`.
    pub cascade: bool,
    /// `TRUNCATE … RESTART IDENTITY`.
    pub restart_identity: bool,
}

/// `T`: Truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// CASCADE / RESTART IDENTITY.
    pub flags: TruncateFlags,
    /// The tables truncated together.
    pub relation_ids: Vec<RelationId>,
}

/// `M`: a logical decoding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// The streamed transaction this belongs to (only inside a stream).
    pub xid: Option<Xid>,
    /// Emitted as part of a transaction (else delivered at once).
    pub transactional: bool,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content: a view of the received buffer.
    pub content: Bytes,
}

/// `S`: Stream Start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The streamed (top-level) transaction.
    pub xid: Xid,
    /// This is the transaction's first chunk.
    pub first_segment: bool,
}

/// `c`: Stream Commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCommit {
    /// The streamed transaction.
    pub xid: Xid,
    /// Flags; currently unused by PostgreSQL (kept as sent).
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The LSN just past the commit record.
    pub end_lsn: Lsn,
    /// Commit time on the source.
    pub commit_time: PgTimestamp,
}

/// Where and when a streamed transaction aborted: sent only with protocol
/// version 4 and `streaming 'parallel'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortInfo {
    /// The LSN of the abort.
    pub abort_lsn: Lsn,
    /// Abort time on the source.
    pub abort_time: PgTimestamp,
}

/// `A`: Stream Abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbort {
    /// The top-level streamed transaction.
    pub xid: Xid,
    /// The aborted subtransaction, equal to `xid` when the whole
    /// transaction aborts.
    pub subxid: Xid,
    /// Present exactly when the stream is parallel (v4).
    pub abort_info: Option<AbortInfo>,
}

/// `b`: Begin Prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The LSN just past the prepare record.
    pub end_lsn: Lsn,
    /// Prepare time on the source.
    pub prepare_time: PgTimestamp,
    /// The transaction's id.
    pub xid: Xid,
    /// The user-given GID of the prepared transaction.
    pub gid: String,
}

/// `P` Prepare and `p` Stream Prepare (same layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    /// Flags; currently unused by PostgreSQL (kept as sent).
    pub flags: u8,
    /// The LSN of the prepare.
    pub prepare_lsn: Lsn,
    /// The LSN just past the prepare record.
    pub end_lsn: Lsn,
    /// Prepare time on the source.
    pub prepare_time: PgTimestamp,
    /// The transaction's id.
    pub xid: Xid,
    /// The user-given GID of the prepared transaction.
    pub gid: String,
}

/// `K`: Commit Prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    /// Flags; currently unused by PostgreSQL (kept as sent).
    pub flags: u8,
    /// The LSN of the commit of the prepared transaction.
    pub commit_lsn: Lsn,
    /// The LSN just past that commit record.
    pub end_lsn: Lsn,
    /// Commit time on the source.
    pub commit_time: PgTimestamp,
    /// The transaction's id.
    pub xid: Xid,
    /// The user-given GID of the prepared transaction.
    pub gid: String,
}

/// `r`: Rollback Prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    /// Flags; currently unused by PostgreSQL (kept as sent).
    pub flags: u8,
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the rollback.
    pub rollback_end_lsn: Lsn,
    /// Prepare time on the source.
    pub prepare_time: PgTimestamp,
    /// Rollback time on the source.
    pub rollback_time: PgTimestamp,
    /// The transaction's id.
    pub xid: Xid,
    /// The user-given GID of the prepared transaction.
    pub gid: String,
}
