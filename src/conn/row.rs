//! A result row in text format, with typed accessors that turn a missing or
//! malformed value into an error instead of a panic.

use std::ops::Range;
use std::str::FromStr;

use bytes::Bytes;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::DataRowBody;

use super::error::ConnError;

/// One DataRow: the received buffer and where each value lies in it.
#[derive(Debug, Clone)]
pub struct Row {
    buf: Bytes,
    ranges: Vec<Option<Range<usize>>>,
}

impl Row {
    pub(crate) fn from_body(body: DataRowBody) -> Result<Row, ConnError> {
        let ranges = body
            .ranges()
            .collect()
            .map_err(|e| ConnError::protocol(format!("malformed DataRow: {e}")))?;
        Ok(Row {
            buf: body.buffer_bytes().clone(),
            ranges,
        })
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Raw bytes of column `i`; `None` for SQL NULL.
    pub fn raw(&self, i: usize) -> Result<Option<&[u8]>, ConnError> {
        match self.ranges.get(i) {
            None => Err(ConnError::Value {
                column: i.to_string(),
                reason: format!("row has only {} columns", self.ranges.len()),
            }),
            Some(None) => Ok(None),
            Some(Some(r)) => self
                .buf
                .get(r.clone())
                .map(Some)
                .ok_or_else(|| ConnError::Value {
                    column: i.to_string(),
                    reason: "value lies outside the row".into(),
                }),
        }
    }

    /// Raw bytes of column `i` as a shared slice of the row buffer.
    pub fn bytes(&self, i: usize) -> Result<Option<Bytes>, ConnError> {
        match self.ranges.get(i) {
            Some(Some(r)) if r.end <= self.buf.len() => Ok(Some(self.buf.slice(r.clone()))),
            Some(None) => Ok(None),
            _ => Err(ConnError::Value {
                column: i.to_string(),
                reason: "no such column".into(),
            }),
        }
    }

    /// Column `i` as text; `None` for NULL.
    pub fn opt_str(&self, i: usize) -> Result<Option<&str>, ConnError> {
        match self.raw(i)? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|e| ConnError::Value {
                    column: i.to_string(),
                    reason: format!("not UTF-8: {e}"),
                }),
        }
    }

    /// Column `i` as text; NULL is an error.
    pub fn str(&self, i: usize) -> Result<&str, ConnError> {
        self.opt_str(i)?.ok_or_else(|| ConnError::Value {
            column: i.to_string(),
            reason: "unexpected NULL".into(),
        })
    }

    /// Column `i` parsed with `FromStr`; NULL is an error.
    pub fn parse<T: FromStr>(&self, i: usize) -> Result<T, ConnError>
    where
        T::Err: std::fmt::Display,
    {
        let s = self.str(i)?;
        s.parse().map_err(|e| ConnError::Value {
            column: i.to_string(),
            reason: format!("cannot parse {s:?}: {e}"),
        })
    }

    /// Column `i` parsed with `FromStr`, or `None` for NULL.
    pub fn opt_parse<T: FromStr>(&self, i: usize) -> Result<Option<T>, ConnError>
    where
        T::Err: std::fmt::Display,
    {
        match self.opt_str(i)? {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|e| ConnError::Value {
                column: i.to_string(),
                reason: format!("cannot parse {s:?}: {e}"),
            }),
        }
    }

    /// Column `i` as a boolean in PostgreSQL's text form (`t`/`f`).
    pub fn bool(&self, i: usize) -> Result<bool, ConnError> {
        match self.str(i)? {
            "t" | "true" | "on" => Ok(true),
            "f" | "false" | "off" => Ok(false),
            other => Err(ConnError::Value {
                column: i.to_string(),
                reason: format!("not a boolean: {other:?}"),
            }),
        }
    }
}
