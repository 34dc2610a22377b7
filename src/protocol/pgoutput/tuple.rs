//! TupleData: the column values of a row in Insert, Update and Delete.
//!
//! A tuple is validated once when its message is decoded, then kept as the
//! raw `Bytes` view of the received buffer and walked lazily: decoding a
//! row costs no allocation at all, and each value handed out is a slice of
//! the buffer, never a copy.

use std::ops::Range;

use bytes::Bytes;

use crate::protocol::error::ProtocolError;
use crate::protocol::reader::Reader;

const NULL: u8 = b'n';
const UNCHANGED_TOAST: u8 = b'u';
const TEXT: u8 = b't';
const BINARY: u8 = b'b';

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: a TOASTed value that did not change; its bytes are not sent and
    /// the target must keep what it has (distinct from NULL).
    UnchangedToast,
    /// `t`: the value in the type's text format.
    Text(Bytes),
    /// `b`: the value in the type's binary format (`binary 'true'`).
    Binary(Bytes),
}

/// The columns of one row, in the Relation message's column order.
///
/// Holds the validated wire bytes; [`TupleData::iter`] yields the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleData {
    /// The column entries after the Int16 column count.
    raw: Bytes,
    column_count: u16,
}

impl TupleData {
    /// Reads and validates one TupleData, leaving `r` after it.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<TupleData, ProtocolError> {
        let count_offset = r.offset();
        let count = r.i16("TupleData.column_count")?;
        let column_count = u16::try_from(count).map_err(|_| ProtocolError::NegativeLength {
            field: "TupleData.column_count",
            offset: count_offset,
            value: i64::from(count),
        })?;
        let start = r.offset();
        for _ in 0..column_count {
            let kind_offset = r.offset();
            match r.u8("TupleData column kind")? {
                NULL | UNCHANGED_TOAST => {}
                TEXT | BINARY => {
                    let len_offset = r.offset();
                    let len = r.i32("TupleData column length")?;
                    let len = usize::try_from(len).map_err(|_| ProtocolError::NegativeLength {
                        field: "TupleData column length",
                        offset: len_offset,
                        value: i64::from(len),
                    })?;
                    r.skip(len, "TupleData column value")?;
                }
                other => {
                    return Err(ProtocolError::InvalidValue {
                        field: "TupleData column kind",
                        offset: kind_offset,
                        value: u64::from(other),
                    })
                }
            }
        }
        Ok(TupleData {
            raw: r.since(start),
            column_count,
        })
    }

    /// Builds a tuple from values, in the wire layout: apply uses it to
    /// merge an update's unchanged-TOAST placeholders with the values an
    /// earlier change of the same row carried. Fails only past 65535
    /// columns or a value over 2 GiB, which no PostgreSQL row has.
    pub fn from_values<'v>(
        values: impl ExactSizeIterator<Item = ColumnRef<'v>>,
    ) -> Result<TupleData, ProtocolError> {
        let column_count =
            u16::try_from(values.len()).map_err(|_| ProtocolError::InvalidValue {
                field: "TupleData.column_count",
                offset: 0,
                value: values.len() as u64,
            })?;
        let mut raw = Vec::new();
        for v in values {
            let (kind, bytes) = match v {
                ColumnRef::Null => (NULL, None),
                ColumnRef::UnchangedToast => (UNCHANGED_TOAST, None),
                ColumnRef::Text(b) => (TEXT, Some(b)),
                ColumnRef::Binary(b) => (BINARY, Some(b)),
            };
            raw.push(kind);
            if let Some(b) = bytes {
                let len = i32::try_from(b.len()).map_err(|_| ProtocolError::InvalidValue {
                    field: "TupleData column length",
                    offset: 0,
                    value: b.len() as u64,
                })?;
                raw.extend_from_slice(&len.to_be_bytes());
                raw.extend_from_slice(b);
            }
        }
        Ok(TupleData {
            raw: Bytes::from(raw),
            column_count,
        })
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.column_count)
    }

    /// Whether the tuple has no columns.
    pub fn is_empty(&self) -> bool {
        self.column_count == 0
    }

    /// The column entries as received (after the column count): for
    /// spilling a change to disk without decoding it.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The column values in order, each a `Bytes` view of the received
    /// buffer: for values that outlive the tuple (one reference-count
    /// increment each).
    pub fn iter(&self) -> TupleIter<'_> {
        TupleIter {
            bytes: &self.raw,
            walker: Walker::new(&self.raw, self.column_count),
        }
    }

    /// The column values in order, borrowed from the tuple: the cheapest
    /// walk, for encoding them straight into an outgoing buffer.
    pub fn iter_ref(&self) -> TupleRefIter<'_> {
        TupleRefIter {
            walker: Walker::new(&self.raw, self.column_count),
        }
    }
}

impl<'a> IntoIterator for &'a TupleData {
    type Item = ColumnValue;
    type IntoIter = TupleIter<'a>;

    fn into_iter(self) -> TupleIter<'a> {
        self.iter()
    }
}

/// A column value borrowed from its [`TupleData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRef<'a> {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value, not sent.
    UnchangedToast,
    /// `t`: text format.
    Text(&'a [u8]),
    /// `b`: binary format.
    Binary(&'a [u8]),
}

impl ColumnValue {
    /// The same value, borrowed.
    pub fn borrowed(&self) -> ColumnRef<'_> {
        match self {
            ColumnValue::Null => ColumnRef::Null,
            ColumnValue::UnchangedToast => ColumnRef::UnchangedToast,
            ColumnValue::Text(b) => ColumnRef::Text(b),
            ColumnValue::Binary(b) => ColumnRef::Binary(b),
        }
    }
}

/// One column located in the raw tuple bytes.
enum RawColumn {
    Null,
    UnchangedToast,
    Text(Range<usize>),
    Binary(Range<usize>),
}

/// Walks validated tuple bytes; shared by both iterators.
#[derive(Debug, Clone)]
struct Walker<'a> {
    raw: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Walker<'a> {
    fn new(raw: &'a [u8], column_count: u16) -> Self {
        Walker {
            raw,
            pos: 0,
            remaining: column_count,
        }
    }

    /// The next column; `None` at the end, or if the validated bytes were
    /// somehow inconsistent (ends the walk instead of panicking).
    fn next(&mut self) -> Option<RawColumn> {
        self.remaining = self.remaining.checked_sub(1)?;
        let kind = *self.raw.get(self.pos)?;
        let after_kind = self.pos + 1;
        let column = match kind {
            NULL => {
                self.pos = after_kind;
                RawColumn::Null
            }
            UNCHANGED_TOAST => {
                self.pos = after_kind;
                RawColumn::UnchangedToast
            }
            TEXT | BINARY => {
                let len_bytes: [u8; 4] =
                    self.raw.get(after_kind..after_kind + 4)?.try_into().ok()?;
                let len = usize::try_from(i32::from_be_bytes(len_bytes)).ok()?;
                let start = after_kind + 4;
                let end = start
                    .checked_add(len)
                    .filter(|end| *end <= self.raw.len())?;
                self.pos = end;
                if kind == TEXT {
                    RawColumn::Text(start..end)
                } else {
                    RawColumn::Binary(start..end)
                }
            }
            _ => return None,
        };
        Some(column)
    }

    fn len(&self) -> usize {
        usize::from(self.remaining)
    }
}

/// Iterator over a [`TupleData`]'s values as `Bytes` views.
#[derive(Debug, Clone)]
pub struct TupleIter<'a> {
    bytes: &'a Bytes,
    walker: Walker<'a>,
}

impl Iterator for TupleIter<'_> {
    type Item = ColumnValue;

    fn next(&mut self) -> Option<ColumnValue> {
        Some(match self.walker.next()? {
            RawColumn::Null => ColumnValue::Null,
            RawColumn::UnchangedToast => ColumnValue::UnchangedToast,
            RawColumn::Text(range) => ColumnValue::Text(self.bytes.slice(range)),
            RawColumn::Binary(range) => ColumnValue::Binary(self.bytes.slice(range)),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Validation at decode time guarantees exactly this many values.
        (self.walker.len(), Some(self.walker.len()))
    }
}

impl ExactSizeIterator for TupleIter<'_> {}

/// Iterator over a [`TupleData`]'s values as borrowed slices.
#[derive(Debug, Clone)]
pub struct TupleRefIter<'a> {
    walker: Walker<'a>,
}

impl<'a> Iterator for TupleRefIter<'a> {
    type Item = ColumnRef<'a>;

    fn next(&mut self) -> Option<ColumnRef<'a>> {
        let raw = self.walker.raw;
        Some(match self.walker.next()? {
            RawColumn::Null => ColumnRef::Null,
            RawColumn::UnchangedToast => ColumnRef::UnchangedToast,
            RawColumn::Text(range) => ColumnRef::Text(raw.get(range)?),
            RawColumn::Binary(range) => ColumnRef::Binary(raw.get(range)?),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.walker.len(), Some(self.walker.len()))
    }
}

impl ExactSizeIterator for TupleRefIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(columns: &[ColumnValue]) -> Vec<u8> {
        let mut v = (columns.len() as i16).to_be_bytes().to_vec();
        for c in columns {
            match c {
                ColumnValue::Null => v.push(b'n'),
                ColumnValue::UnchangedToast => v.push(b'u'),
                ColumnValue::Text(b) | ColumnValue::Binary(b) => {
                    v.push(if matches!(c, ColumnValue::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    v.extend_from_slice(b);
                }
            }
        }
        v
    }

    fn read(bytes: Vec<u8>) -> Result<(TupleData, usize), ProtocolError> {
        let buf = Bytes::from(bytes);
        let mut r = Reader::new(&buf);
        let t = TupleData::read(&mut r)?;
        Ok((t, r.offset()))
    }

    #[test]
    fn keeps_null_toast_text_and_binary_apart() -> Result<(), ProtocolError> {
        let columns = vec![
            ColumnValue::Null,
            ColumnValue::UnchangedToast,
            ColumnValue::Text(Bytes::from_static(b"42")),
            ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 42])),
            ColumnValue::Text(Bytes::new()),
        ];
        let wire = encode(&columns);
        let len = wire.len();
        let (tuple, end) = read(wire)?;
        assert_eq!(end, len);
        assert_eq!(tuple.len(), 5);
        assert_eq!(tuple.iter().len(), 5);
        assert_eq!(tuple.iter().collect::<Vec<_>>(), columns);
        let borrowed: Vec<ColumnRef<'_>> = columns.iter().map(ColumnValue::borrowed).collect();
        assert_eq!(tuple.iter_ref().collect::<Vec<_>>(), borrowed);
        assert_eq!(tuple.iter_ref().len(), 5);
        Ok(())
    }

    #[test]
    fn values_are_views_of_the_input() {
        let buf = Bytes::from(encode(&[ColumnValue::Text(Bytes::from_static(b"abc"))]));
        let mut r = Reader::new(&buf);
        let tuple = TupleData::read(&mut r).ok();
        let first = tuple.as_ref().and_then(|t| t.iter().next());
        let Some(ColumnValue::Text(v)) = first else {
            panic!("expected a text value, got {first:?}");
        };
        assert_eq!(v.as_ptr(), buf[7..].as_ptr());
    }

    #[test]
    fn empty_tuple_is_valid() -> Result<(), ProtocolError> {
        let (tuple, end) = read(vec![0, 0])?;
        assert!(tuple.is_empty());
        assert_eq!(end, 2);
        assert_eq!(tuple.iter().next(), None);
        Ok(())
    }

    #[test]
    fn rejects_bad_kind_negative_counts_and_lengths() {
        assert!(matches!(
            read(vec![0, 1, b'x']),
            Err(ProtocolError::InvalidValue {
                offset: 2,
                value: 0x78,
                ..
            })
        ));
        assert!(matches!(
            read(vec![0xff, 0xff]),
            Err(ProtocolError::NegativeLength {
                offset: 0,
                value: -1,
                ..
            })
        ));
        assert!(matches!(
            read(vec![0, 1, b't', 0xff, 0xff, 0xff, 0xfe]),
            Err(ProtocolError::NegativeLength {
                offset: 3,
                value: -2,
                ..
            })
        ));
        assert!(matches!(
            read(vec![0, 1, b'b', 0x7f, 0xff, 0xff, 0xff, 1]),
            Err(ProtocolError::Truncated { offset: 7, .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let wire = encode(&[
            ColumnValue::Text(Bytes::from_static(b"hello")),
            ColumnValue::Null,
            ColumnValue::Binary(Bytes::from_static(b"\x01\x02")),
        ]);
        for len in 0..wire.len() {
            assert!(read(wire[..len].to_vec()).is_err(), "prefix {len}");
        }
    }
}
