//! Decoding the rows of a result: RowDescription columns and DataRow cells, for the answers Ocelot reads itself
//! (merging shards' rows, reading training data and registry rows). Borrowed views of the message bytes; nothing
//! is copied but the column names. [`Answer`] is one server's whole answer to a simple Query, as gathered.

use bytes::{Bytes, BytesMut};

use crate::frame::Header;

/// One server's answer to one simple Query, gathered whole.
#[derive(Default)]
pub struct Answer {
    pub row_description: Option<Bytes>,
    /// DataRow messages, headers included.
    pub rows: BytesMut,
    pub count: u64,
    /// The last CommandComplete tag.
    pub tag: Option<String>,
    /// The first ErrorResponse message.
    pub error: Option<Bytes>,
    /// CopyInResponse: the server now waits for COPY data (reading stopped there).
    pub copy_in: Option<Bytes>,
    /// ParameterDescription, when a statement was described.
    pub param_types: Option<Bytes>,
}

/// Splits concatenated DataRow messages.
pub fn split_rows(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some(h)) = Header::parse(&buf[at..], u32::MAX) {
        let end = at + h.total();
        if end > buf.len() {
            break;
        }
        out.push(&buf[at..end]);
        at = end;
    }
    out
}

/// The cells of one DataRow message (header included); `None` is NULL.
pub fn cells(row: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let body = row.get(5..)?;
    let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut at = 2;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(body.get(at..at + len as usize)?));
            at += len as usize;
        }
    }
    Some(out)
}

/// One column of a RowDescription.
pub struct Field<'a> {
    pub name: String,
    pub table: u32,
    pub attnum: i16,
    pub oid: u32,
    /// The column's bytes in the RowDescription (name, NUL and the 18 fixed bytes).
    pub raw: &'a [u8],
}

/// The columns of a RowDescription message (header included).
pub fn fields(rd: &[u8]) -> Option<Vec<Field<'_>>> {
    let body = rd.get(5..)?;
    let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let nul = body.get(at..)?.iter().position(|&b| b == 0)?;
        let fixed = body.get(at + nul + 1..at + nul + 19)?;
        out.push(Field {
            name: String::from_utf8_lossy(&body[at..at + nul]).to_lowercase(),
            table: u32::from_be_bytes(fixed[0..4].try_into().ok()?),
            attnum: i16::from_be_bytes(fixed[4..6].try_into().ok()?),
            oid: u32::from_be_bytes(fixed[6..10].try_into().ok()?),
            raw: &body[at..at + nul + 19],
        });
        at += nul + 19;
    }
    Some(out)
}
