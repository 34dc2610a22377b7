//! The streaming replication protocol's CopyData payloads (the "COPY
//! BOTH" sub-protocol started by `START_REPLICATION`).
//!
//! The server sends XLogData (`w`) carrying one pgoutput message each, and
//! Primary Keepalive (`k`); the client answers with Standby Status Update
//! (`r`), whose flush LSN is what lets the source free WAL.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::lsn::Lsn;
use super::reader::Reader;
use super::timestamp::PgTimestamp;

const XLOG_DATA_TAG: u8 = b'w';
const PRIMARY_KEEPALIVE_TAG: u8 = b'k';
const STANDBY_STATUS_UPDATE_TAG: u8 = b'r';

/// Size of an encoded Standby Status Update: tag, three LSNs, time, flag.
pub const STANDBY_STATUS_UPDATE_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

/// A CopyData payload sent by the server during replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: for logical replication, one output plugin message.
    XLogData(XLogData),
    /// A heartbeat, possibly asking for an immediate status update.
    PrimaryKeepalive(PrimaryKeepalive),
}

/// `XLogData` (`w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    /// The starting point of the WAL data in this message.
    pub wal_start: Lsn,
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// The server's clock at transmission.
    pub send_time: PgTimestamp,
    /// The payload: a view of the received buffer, never a copy.
    pub data: Bytes,
}

/// `Primary keepalive message` (`k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    /// The current end of WAL on the server.
    pub wal_end: Lsn,
    /// The server's clock at transmission.
    pub send_time: PgTimestamp,
    /// The server asks for a Standby Status Update as soon as possible, to
    /// avoid a timeout disconnect.
    pub reply_requested: bool,
}

impl ReplicationMessage {
    /// Parses one CopyData payload received from the server.
    ///
    /// `buf` is the CopyData body (without the `d` header). XLogData's
    /// payload is a slice of it.
    pub fn parse(buf: Bytes) -> Result<ReplicationMessage, ProtocolError> {
        let mut r = Reader::new(&buf);
        let tag_offset = r.offset();
        match r.u8("replication message type")? {
            XLOG_DATA_TAG => {
                let wal_start = Lsn(r.u64("XLogData.wal_start")?);
                let wal_end = Lsn(r.u64("XLogData.wal_end")?);
                let send_time = PgTimestamp(r.i64("XLogData.send_time")?);
                let data = r.rest();
                Ok(ReplicationMessage::XLogData(XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data,
                }))
            }
            PRIMARY_KEEPALIVE_TAG => {
                let wal_end = Lsn(r.u64("PrimaryKeepalive.wal_end")?);
                let send_time = PgTimestamp(r.i64("PrimaryKeepalive.send_time")?);
                let reply_requested = r.bool("PrimaryKeepalive.reply_requested")?;
                r.finish("PrimaryKeepalive")?;
                Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end,
                    send_time,
                    reply_requested,
                }))
            }
            tag => Err(ProtocolError::UnknownMessage {
                stream: "replication",
                tag,
                offset: tag_offset,
            }),
        }
    }
}

/// `Standby status update` (`r`): the client's progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// WAL received and written to disk, plus one byte.
    pub write: Lsn,
    /// WAL durably applied on the target, plus one byte: the server may
    /// recycle WAL before it.
    pub flush: Lsn,
    /// WAL applied, plus one byte.
    pub apply: Lsn,
    /// The client's clock at transmission.
    pub client_time: PgTimestamp,
    /// Ask the server to answer with a keepalive at once (used to measure
    /// round trips).
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Appends the CopyData body (without the `d` header) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(STANDBY_STATUS_UPDATE_LEN);
        out.put_u8(STANDBY_STATUS_UPDATE_TAG);
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(self.client_time.0);
        out.put_u8(u8::from(self.reply_requested));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlog_data(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b'w'];
        v.extend_from_slice(&0x16_B374_D848u64.to_be_bytes());
        v.extend_from_slice(&0x16_B374_D900u64.to_be_bytes());
        v.extend_from_slice(&777i64.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn keepalive(reply: u8) -> Vec<u8> {
        let mut v = vec![b'k'];
        v.extend_from_slice(&0x10u64.to_be_bytes());
        v.extend_from_slice(&(-5i64).to_be_bytes());
        v.push(reply);
        v
    }

    #[test]
    fn parses_xlog_data_as_a_view() {
        let buf = Bytes::from(xlog_data(b"Bpayload"));
        let parsed = ReplicationMessage::parse(buf.clone());
        let Ok(ReplicationMessage::XLogData(x)) = parsed else {
            panic!("expected XLogData, got {parsed:?}");
        };
        assert_eq!(x.wal_start, Lsn(0x16_B374_D848));
        assert_eq!(x.wal_end, Lsn(0x16_B374_D900));
        assert_eq!(x.send_time, PgTimestamp(777));
        assert_eq!(x.data.as_ref(), b"Bpayload");
        // Zero-copy: the payload points into the received buffer.
        assert_eq!(x.data.as_ptr(), buf[25..].as_ptr());
    }

    #[test]
    fn xlog_data_may_be_empty() {
        let parsed = ReplicationMessage::parse(Bytes::from(xlog_data(b"")));
        assert!(matches!(parsed, Ok(ReplicationMessage::XLogData(x)) if x.data.is_empty()));
    }

    #[test]
    fn parses_keepalive() {
        for (byte, reply) in [(0u8, false), (1, true)] {
            assert_eq!(
                ReplicationMessage::parse(Bytes::from(keepalive(byte))),
                Ok(ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: Lsn(0x10),
                    send_time: PgTimestamp(-5),
                    reply_requested: reply,
                }))
            );
        }
        assert!(matches!(
            ReplicationMessage::parse(Bytes::from(keepalive(2))),
            Err(ProtocolError::InvalidValue { offset: 17, .. })
        ));
        let mut long = keepalive(0);
        long.push(0);
        assert!(matches!(
            ReplicationMessage::parse(Bytes::from(long)),
            Err(ProtocolError::TrailingBytes {
                offset: 18,
                count: 1,
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for full in [xlog_data(b""), keepalive(1)] {
            for len in 0..full.len() {
                let prefix = Bytes::copy_from_slice(&full[..len]);
                assert!(
                    ReplicationMessage::parse(prefix).is_err(),
                    "prefix {len} of {full:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_tags_are_rejected() {
        for tag in (0..=255u8).filter(|t| *t != b'w' && *t != b'k') {
            let err = ReplicationMessage::parse(Bytes::from(vec![tag; 40]));
            assert_eq!(
                err,
                Err(ProtocolError::UnknownMessage {
                    stream: "replication",
                    tag,
                    offset: 0
                })
            );
        }
    }

    #[test]
    fn encodes_standby_status_update() {
        let update = StandbyStatusUpdate {
            write: Lsn(0x0102_0304_0506_0708),
            flush: Lsn(2),
            apply: Lsn(3),
            client_time: PgTimestamp(-1),
            reply_requested: true,
        };
        let mut out = BytesMut::new();
        update.encode(&mut out);
        let mut expected = vec![b'r', 1, 2, 3, 4, 5, 6, 7, 8];
        expected.extend_from_slice(&2u64.to_be_bytes());
        expected.extend_from_slice(&3u64.to_be_bytes());
        expected.extend_from_slice(&[0xff; 8]);
        expected.push(1);
        assert_eq!(out.as_ref(), expected.as_slice());
        assert_eq!(out.len(), STANDBY_STATUS_UPDATE_LEN);
    }
}
