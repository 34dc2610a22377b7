//! COPY TO STDOUT and COPY FROM STDIN, streamed.
//!
//! A CopyData frame has the same layout in both directions ('d', length,
//! payload), so the copy path hands whole received frames to the target
//! without decoding or re-framing a single row: [`CopyOut::next_frames`]
//! returns a run of complete frames as one shared `Bytes`, and
//! [`CopyIn::send_frames`] writes such a run as it is.

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

use super::connection::{rows_from_tag, Connection};
use super::error::{ConnError, DbError};

/// Reads one `COPY … TO STDOUT`.
pub struct CopyOut<'a> {
    conn: &'a mut Connection,
    done: Option<u64>,
}

/// Writes one `COPY … FROM STDIN`.
pub struct CopyIn<'a> {
    conn: &'a mut Connection,
    finished: bool,
}

impl Connection {
    /// Starts `COPY … TO STDOUT`.
    pub async fn copy_out(&mut self, sql: &str) -> Result<CopyOut<'_>, ConnError> {
        self.check_usable()?;
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            match self.next_message().await? {
                Message::CopyOutResponse(_) => {
                    return Ok(CopyOut {
                        conn: self,
                        done: None,
                    })
                }
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    self.drain_to_ready(Some(e)).await?;
                    return Err(ConnError::protocol("error lost while draining"));
                }
                Message::RowDescription(_) | Message::CommandComplete(_) => {}
                Message::ReadyForQuery(_) => {
                    return Err(ConnError::protocol(
                        "statement did not start a COPY TO STDOUT",
                    ))
                }
                _ => {
                    return Err(ConnError::protocol(
                        "unexpected message before CopyOutResponse",
                    ))
                }
            }
        }
    }

    /// Starts `COPY … FROM STDIN`.
    pub async fn copy_in(&mut self, sql: &str) -> Result<CopyIn<'_>, ConnError> {
        self.check_usable()?;
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        match self.next_message().await? {
            Message::CopyInResponse(_) => {
                // Until finish() or fail(), the session is mid-COPY.
                self.broken = true;
                Ok(CopyIn {
                    conn: self,
                    finished: false,
                })
            }
            Message::ErrorResponse(body) => {
                let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                self.drain_to_ready(Some(e)).await?;
                Err(ConnError::protocol("error lost while draining"))
            }
            Message::ReadyForQuery(_) => Err(ConnError::protocol(
                "statement did not start a COPY FROM STDIN",
            )),
            _ => Err(ConnError::protocol(
                "unexpected message before CopyInResponse",
            )),
        }
    }
}

impl CopyOut<'_> {
    /// The next run of complete CopyData frames, exactly as received
    /// (headers included), or `None` at the end of the COPY. The row count
    /// is then available from [`CopyOut::rows`].
    pub async fn next_frames(&mut self) -> Result<Option<Bytes>, ConnError> {
        if self.done.is_some() {
            return Ok(None);
        }
        let conn = &mut *self.conn;
        loop {
            // Walk the complete 'd' frames at the front of the buffer.
            let mut end = 0usize;
            let mut partial = false;
            loop {
                let Some(header) = conn.rbuf.get(end..end + 5) else {
                    partial = end < conn.rbuf.len() || end == 0;
                    break;
                };
                if header[0] != b'd' {
                    break;
                }
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if !(4..=(1 << 30) + (1 << 20)).contains(&len) {
                    return Err(ConnError::protocol(format!(
                        "invalid CopyData length {len}"
                    )));
                }
                if end + 1 + len > conn.rbuf.len() {
                    partial = true;
                    if end == 0 {
                        conn.rbuf.reserve(1 + len - conn.rbuf.len());
                    }
                    break;
                }
                end += 1 + len;
            }
            if end > 0 {
                return Ok(Some(conn.rbuf.split_to(end).freeze()));
            }
            if partial {
                conn.fill().await?;
                continue;
            }
            // Not a CopyData frame: the end of the COPY or an error.
            match conn.next_message().await? {
                Message::CopyDone => {}
                Message::CommandComplete(body) => {
                    let tag = body.tag().map_err(|e| ConnError::protocol(e.to_string()))?;
                    self.done = Some(rows_from_tag(tag));
                    conn.drain_to_ready(None).await?;
                    return Ok(None);
                }
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    conn.drain_to_ready(Some(e)).await?;
                    return Err(ConnError::protocol("error lost while draining"));
                }
                _ => {
                    conn.broken = true;
                    return Err(ConnError::protocol(
                        "unexpected message during COPY TO STDOUT",
                    ));
                }
            }
        }
    }

    /// Rows the server reported once the COPY ended.
    pub fn rows(&self) -> Option<u64> {
        self.done
    }
}

/// Iterates the payloads of a run of CopyData frames (as returned by
/// [`CopyOut::next_frames`]).
pub fn copy_payloads(mut frames: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        let header = frames.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len < 4 || frames.len() < 1 + len {
            return None;
        }
        let mut frame = frames.split_to(1 + len);
        frame.advance(5);
        Some(frame)
    })
}

impl CopyIn<'_> {
    /// Sends a run of complete CopyData frames as they are.
    pub async fn send_frames(&mut self, frames: &[u8]) -> Result<(), ConnError> {
        self.conn.writer.write_all(frames).await?;
        Ok(())
    }

    /// Sends `data` as one CopyData frame.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let len =
            u32::try_from(data.len() + 4).map_err(|_| ConnError::protocol("CopyData over 4 GB"))?;
        let mut header = [b'd', 0, 0, 0, 0];
        header[1..].copy_from_slice(&len.to_be_bytes());
        self.conn.writer.write_all(&header).await?;
        self.conn.writer.write_all(data).await?;
        Ok(())
    }

    /// Ends the COPY and returns the number of rows the server stored.
    pub async fn finish(mut self) -> Result<u64, ConnError> {
        self.finished = true;
        frontend::copy_done(&mut self.conn.wbuf);
        self.conn.flush().await?;
        self.conn.broken = false;
        let mut rows = 0;
        loop {
            match self.conn.next_message().await? {
                Message::CommandComplete(body) => {
                    rows =
                        rows_from_tag(body.tag().map_err(|e| ConnError::protocol(e.to_string()))?)
                }
                Message::ReadyForQuery(_) => return Ok(rows),
                Message::ErrorResponse(body) => {
                    let e = ConnError::Db(Box::new(DbError::from_fields(body.fields())?));
                    self.conn.drain_to_ready(Some(e)).await?;
                    return Err(ConnError::protocol("error lost while draining"));
                }
                _ => {}
            }
        }
    }

    /// Aborts the COPY: the server discards what it received.
    pub async fn fail(mut self, reason: &str) -> Result<(), ConnError> {
        self.finished = true;
        frontend::copy_fail(reason, &mut self.conn.wbuf)?;
        self.conn.flush().await?;
        self.conn.broken = false;
        match self.conn.drain_to_ready(None).await {
            // The server answers CopyFail with the error we asked for.
            Err(ConnError::Db(_)) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for CopyIn<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.broken = true;
        }
    }
}
