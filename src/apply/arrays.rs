//! One column of many rows as a single array parameter, for the set-based
//! statements (`unnest($1, $2, …)`) that apply a window's rows at once.
//!
//! Values arrive from pgoutput in the type's binary or text format; an
//! array of them is the same bytes with a header (binary) or quoted and
//! comma-separated (text), so building it never interprets a value.

/// A column's values do not share one format (never from one stream, but
/// then the rows go one by one instead).
#[derive(Debug, PartialEq, Eq)]
pub struct MixedFormats;

/// The format of a column's array, fixed by its first non-NULL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrayFormat {
    /// `array_send` layout.
    Binary,
    /// `array_out` layout.
    Text,
}

/// Bytes of the binary header: ndim, flags, element type, length, lower bound.
const HEADER: usize = 20;

/// Builds one array value, element by element.
#[derive(Debug)]
pub struct ArrayBuilder {
    element_type: u32,
    format: Option<ArrayFormat>,
    buf: Vec<u8>,
    /// Elements in binary form, NULLs in binary form, until the format is known
    /// (a column may start with NULLs).
    leading_nulls: usize,
    count: usize,
    has_null: bool,
}

impl ArrayBuilder {
    /// An empty array of `element_type` (the column's type OID).
    pub fn new(element_type: u32) -> ArrayBuilder {
        ArrayBuilder {
            element_type,
            format: None,
            buf: Vec::new(),
            leading_nulls: 0,
            count: 0,
            has_null: false,
        }
    }

    fn start(&mut self, format: ArrayFormat) {
        self.format = Some(format);
        match format {
            ArrayFormat::Binary => {
                self.buf.resize(HEADER, 0);
                for _ in 0..self.leading_nulls {
                    self.buf.extend_from_slice(&(-1i32).to_be_bytes());
                }
            }
            ArrayFormat::Text => {
                self.buf.push(b'{');
                for i in 0..self.leading_nulls {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.buf.extend_from_slice(b"NULL");
                }
            }
        }
    }

    fn separator(&mut self) {
        if self.format == Some(ArrayFormat::Text) && self.count > 0 {
            self.buf.push(b',');
        }
    }

    /// Appends a NULL.
    pub fn push_null(&mut self) {
        self.has_null = true;
        match self.format {
            None => self.leading_nulls += 1,
            Some(ArrayFormat::Binary) => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(ArrayFormat::Text) => {
                self.separator();
                self.buf.extend_from_slice(b"NULL");
            }
        }
        self.count += 1;
    }

    /// Appends a value in `format`.
    pub fn push(&mut self, format: ArrayFormat, value: &[u8]) -> Result<(), MixedFormats> {
        match self.format {
            None => self.start(format),
            Some(f) if f != format => return Err(MixedFormats),
            Some(_) => {}
        }
        match format {
            ArrayFormat::Binary => {
                let len = i32::try_from(value.len()).map_err(|_| MixedFormats)?;
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.extend_from_slice(value);
            }
            ArrayFormat::Text => {
                self.separator();
                self.buf.push(b'"');
                for &b in value {
                    if b == b'"' || b == b'\\' {
                        self.buf.push(b'\\');
                    }
                    self.buf.push(b);
                }
                self.buf.push(b'"');
            }
        }
        self.count += 1;
        Ok(())
    }

    /// The finished array and its format (binary for an all-NULL column).
    pub fn finish(mut self) -> (ArrayFormat, Vec<u8>) {
        if self.format.is_none() {
            self.start(ArrayFormat::Binary);
        }
        match self.format {
            Some(ArrayFormat::Text) => {
                self.buf.push(b'}');
                (ArrayFormat::Text, self.buf)
            }
            _ => {
                let count = i32::try_from(self.count).unwrap_or(i32::MAX);
                let mut header = Vec::with_capacity(HEADER);
                header.extend_from_slice(&1i32.to_be_bytes());
                header.extend_from_slice(&i32::from(self.has_null).to_be_bytes());
                header.extend_from_slice(&self.element_type.to_be_bytes());
                header.extend_from_slice(&count.to_be_bytes());
                header.extend_from_slice(&1i32.to_be_bytes());
                self.buf[..HEADER].copy_from_slice(&header);
                (ArrayFormat::Binary, self.buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_array_layout() {
        let mut a = ArrayBuilder::new(23);
        a.push_null();
        a.push(ArrayFormat::Binary, &7i32.to_be_bytes()).unwrap();
        let (f, b) = a.finish();
        assert_eq!(f, ArrayFormat::Binary);
        let mut want = Vec::new();
        for v in [1i32, 1, 23, 2, 1, -1, 4, 7] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(b, want);
    }

    #[test]
    fn text_array_quotes_every_element() {
        let mut a = ArrayBuilder::new(25);
        a.push_null();
        a.push(ArrayFormat::Text, b"a\"b\\c").unwrap();
        a.push(ArrayFormat::Text, b"NULL").unwrap();
        a.push_null();
        assert_eq!(a.push(ArrayFormat::Binary, b"x"), Err(MixedFormats));
        let (f, b) = a.finish();
        assert_eq!(f, ArrayFormat::Text);
        assert_eq!(b, br#"{NULL,"a\"b\\c","NULL",NULL}"#.to_vec());
    }

    #[test]
    fn empty_and_all_null_arrays_are_binary() {
        let (f, b) = ArrayBuilder::new(25).finish();
        assert_eq!(f, ArrayFormat::Binary);
        assert_eq!(b.len(), 20);
        let mut a = ArrayBuilder::new(25);
        a.push_null();
        assert_eq!(a.finish().1.len(), 24);
    }
}
