//! A bounds-checked big-endian cursor over a `Bytes` buffer.
//!
//! All parsers in this layer read through it so that every out-of-range
//! read becomes a [`ProtocolError`] naming the field and offset, and slices
//! of the input are handed out as zero-copy `Bytes` views.

use bytes::Bytes;

use super::error::ProtocolError;

/// Reads fields front to back; never panics, whatever the input.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next byte to read, relative to the start of the buffer.
    #[inline]
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes the next `N` bytes as an array.
    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let bytes = self
            .pos
            .checked_add(N)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or(ProtocolError::Truncated {
                field,
                offset: self.pos,
                needed: N,
                available: self.remaining(),
            })?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        self.pos += N;
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, ProtocolError> {
        self.array::<1>(field).map(|[b]| b)
    }

    #[inline]
    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, ProtocolError> {
        self.array(field).map(i16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        self.array(field).map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self, field: &'static str) -> Result<i32, ProtocolError> {
        self.array(field).map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.array(field).map(u64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, ProtocolError> {
        self.array(field).map(i64::from_be_bytes)
    }

    /// A boolean sent as one byte that must be 0 or 1.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        let offset = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::InvalidValue {
                field,
                offset,
                value: u64::from(other),
            }),
        }
    }

    /// A zero-copy view of the next `len` bytes.
    pub(crate) fn bytes(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Bytes, ProtocolError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(ProtocolError::Truncated {
                field,
                offset: self.pos,
                needed: len,
                available: self.remaining(),
            })?;
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    /// Skips `len` bytes (a value whose view is taken later).
    #[inline]
    pub(crate) fn skip(&mut self, len: usize, field: &'static str) -> Result<(), ProtocolError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(ProtocolError::Truncated {
                field,
                offset: self.pos,
                needed: len,
                available: self.remaining(),
            })?;
        self.pos = end;
        Ok(())
    }

    /// A zero-copy view from `start` up to the current position.
    pub(crate) fn since(&self, start: usize) -> Bytes {
        let end = self.pos.min(self.buf.len());
        self.buf.slice(start.min(end)..end)
    }

    /// A zero-copy view of everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.buf.len());
        self.pos = self.buf.len();
        self.buf.slice(start..)
    }

    /// A NUL-terminated UTF-8 string; the NUL is consumed, not returned.
    pub(crate) fn cstr(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let offset = self.pos;
        let tail = self.buf.get(offset..).unwrap_or_default();
        let len = tail
            .iter()
            .position(|b| *b == 0)
            .ok_or(ProtocolError::UnterminatedString { field, offset })?;
        let raw = tail.get(..len).unwrap_or_default();
        let text =
            std::str::from_utf8(raw).map_err(|_| ProtocolError::InvalidUtf8 { field, offset })?;
        self.pos = offset + len + 1;
        Ok(text.to_owned())
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(&self, message: &'static str) -> Result<(), ProtocolError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ProtocolError::TrailingBytes {
                message,
                offset: self.pos,
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_fields_and_reports_offsets() {
        let buf = Bytes::from_static(&[0, 1, 0, 0, 0, 2, 0xff]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.i16("a").ok(), Some(1));
        assert_eq!(r.u32("b").ok(), Some(2));
        assert_eq!(
            r.i16("c"),
            Err(ProtocolError::Truncated {
                field: "c",
                offset: 6,
                needed: 2,
                available: 1
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.offset(), 6);
        assert!(r.finish("m").is_err());
    }

    #[test]
    fn cstr_requires_nul_and_utf8() {
        let buf = Bytes::from_static(b"abc\0def");
        let mut r = Reader::new(&buf);
        assert_eq!(r.cstr("s").ok().as_deref(), Some("abc"));
        assert_eq!(
            r.cstr("t"),
            Err(ProtocolError::UnterminatedString {
                field: "t",
                offset: 4
            })
        );
        let bad = Bytes::from_static(&[0xff, 0xfe, 0]);
        assert_eq!(
            Reader::new(&bad).cstr("u"),
            Err(ProtocolError::InvalidUtf8 {
                field: "u",
                offset: 0
            })
        );
    }

    #[test]
    fn bytes_is_a_view_and_checks_overflowing_lengths() {
        let buf = Bytes::from_static(b"hello");
        let mut r = Reader::new(&buf);
        let view = r.bytes(4, "v").ok();
        assert_eq!(view.as_deref(), Some(&b"hell"[..]));
        assert!(r.bytes(usize::MAX, "w").is_err());
        assert_eq!(r.rest().as_ref(), b"o");
        assert!(r.finish("m").is_ok());
    }

    #[test]
    fn bool_accepts_only_0_and_1() {
        let buf = Bytes::from_static(&[0, 1, 2]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.bool("a").ok(), Some(false));
        assert_eq!(r.bool("b").ok(), Some(true));
        assert_eq!(
            r.bool("c"),
            Err(ProtocolError::InvalidValue {
                field: "c",
                offset: 2,
                value: 2
            })
        );
    }
}
