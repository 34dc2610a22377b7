//! The CopyBoth sub-protocol of a replication session: START_REPLICATION
//! turns the session into a two-way stream of CopyData messages.

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::connection::Connection;
use super::error::{ConnError, DbError};

/// A running replication stream.
pub struct CopyBoth<'a> {
    conn: &'a mut Connection,
    ended: bool,
}

impl Connection {
    /// Sends `START_REPLICATION …` (or any command answered with
    /// CopyBothResponse) and returns the stream.
    pub async fn copy_both(&mut self, sql: &str) -> Result<CopyBoth<'_>, ConnError> {
        self.check_usable()?;
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            let (tag, total) = self.buffer_message().await?;
            if tag == b'W' {
                self.rbuf.advance(total);
                self.broken = true;
                return Ok(CopyBoth {
                    conn: self,
                    ended: false,
                });
            }
            match self.next_message().await? {
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    self.drain_to_ready(Some(e)).await?;
                    return Err(ConnError::protocol("error lost while draining"));
                }
                Message::ReadyForQuery(_) => {
                    return Err(ConnError::protocol(
                        "command did not start a CopyBoth stream",
                    ))
                }
                _ => {}
            }
        }
    }
}

impl CopyBoth<'_> {
    /// The next CopyData payload from the server (a slice of the read
    /// buffer, not a copy), or `None` when the server ended the stream.
    /// Cancel-safe: dropping the future loses no data.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, ConnError> {
        if self.ended {
            return Ok(None);
        }
        let (tag, total) = self.conn.buffer_message().await?;
        if tag == b'd' {
            return Ok(Some(self.conn.take_copy_data(total)));
        }
        match self.conn.next_message().await? {
            Message::CopyDone => {
                self.ended = true;
                Ok(None)
            }
            Message::ErrorResponse(body) => {
                self.ended = true;
                Err(ConnError::Db(Box::new(DbError::from_fields(
                    body.fields(),
                )?)))
            }
            _ => Err(ConnError::protocol(
                "unexpected message in replication stream",
            )),
        }
    }

    /// Sends one CopyData message (e.g. a standby status update).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        let data = frontend::CopyData::new(payload)?;
        data.write(&mut self.conn.wbuf);
        self.conn.flush().await
    }

    /// Ends the stream from our side and waits for the server to finish.
    pub async fn finish(self) -> Result<(), ConnError> {
        frontend::copy_done(&mut self.conn.wbuf);
        self.conn.flush().await?;
        loop {
            match self.conn.next_message().await? {
                Message::ReadyForQuery(_) => {
                    self.conn.broken = false;
                    return Ok(());
                }
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    self.conn.drain_to_ready(Some(e)).await?;
                    self.conn.broken = false;
                    return Ok(());
                }
                _ => {}
            }
        }
    }
}
