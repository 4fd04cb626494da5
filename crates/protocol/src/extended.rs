//! Views and rewrites of the extended-query messages that name a prepared statement (Parse, Bind, Describe,
//! Close). Renaming a statement only replaces the name field: everything after it is copied as it is.
//! <https://www.postgresql.org/docs/15/protocol-message-formats.html>

use bytes::{BufMut, BytesMut};

use super::codes::frontend;
use super::decode::Cursor;
use super::ProtocolError;

/// A Parse body split at the statement name: (`name`, everything after the name's terminator).
pub fn parse(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut c = Cursor::new(frontend::PARSE, body);
    let name = c.cstr("statement name")?;
    // The query text must be terminated too; the parameter types after it are not inspected.
    let rest = c.rest();
    Cursor::new(frontend::PARSE, rest).cstr_bytes()?;
    Ok((name, rest))
}

/// A Bind body split around the statement name: (portal, statement, everything after the statement's terminator).
pub fn bind(body: &[u8]) -> Result<(&str, &str, &[u8]), ProtocolError> {
    let mut c = Cursor::new(frontend::BIND, body);
    let portal = c.cstr("portal name")?;
    let statement = c.cstr("statement name")?;
    Ok((portal, statement, c.rest()))
}

/// The parameter values of a Bind (`rest` is what follows the statement name), `None` for a NULL. Values are
/// returned whatever their format: for `text` parameters the binary format is the same UTF-8 bytes.
pub fn bind_params(rest: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut c = Cursor::new(frontend::BIND, rest);
    let read_i16 = |c: &mut Cursor| -> Result<i16, ProtocolError> {
        let b = c.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let nformats = read_i16(&mut c)?.max(0) as usize;
    for _ in 0..nformats {
        read_i16(&mut c)?;
    }
    let nparams = read_i16(&mut c)?.max(0) as usize;
    let mut out = Vec::with_capacity(nparams);
    for _ in 0..nparams {
        let len = c.i32()?;
        out.push(if len < 0 {
            None
        } else {
            Some(c.bytes(len as usize)?)
        });
    }
    Ok(out)
}

/// One Bind parameter: its value (`None` for NULL) and whether it is in binary format.
pub(crate) type BindParam<'a> = (Option<&'a [u8]>, bool);

/// The parameter values of a Bind with whether each is in binary format.
pub fn bind_params_formats(rest: &[u8]) -> Result<Vec<BindParam<'_>>, ProtocolError> {
    let mut c = Cursor::new(frontend::BIND, rest);
    let read_i16 = |c: &mut Cursor| -> Result<i16, ProtocolError> {
        let b = c.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let nformats = read_i16(&mut c)?.max(0) as usize;
    let mut formats = Vec::with_capacity(nformats);
    for _ in 0..nformats {
        formats.push(read_i16(&mut c)? == 1);
    }
    let nparams = read_i16(&mut c)?.max(0) as usize;
    let mut out = Vec::with_capacity(nparams);
    for i in 0..nparams {
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => formats.get(i).copied().unwrap_or(false),
        };
        let len = c.i32()?;
        out.push((
            if len < 0 {
                None
            } else {
                Some(c.bytes(len as usize)?)
            },
            binary,
        ));
    }
    Ok(out)
}

/// A Describe or Close body: the target kind (`S` statement or `P` portal) and its name.
pub fn target(code: u8, body: &[u8]) -> Result<(u8, &str), ProtocolError> {
    let mut c = Cursor::new(code, body);
    let kind = c.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(ProtocolError::Invalid(format!(
            "invalid {} target type '{}'",
            if code == frontend::CLOSE {
                "CLOSE"
            } else {
                "DESCRIBE"
            },
            kind as char
        )));
    }
    Ok((kind, c.cstr("name")?))
}

fn with_len(buf: &mut BytesMut, code: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(code);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Parse(`name`) with the query and parameter types `rest` of another Parse.
pub fn encode_parse(buf: &mut BytesMut, name: &str, rest: &[u8]) {
    with_len(buf, frontend::PARSE, |b| {
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_slice(rest);
    });
}

/// Bind with its statement renamed.
pub fn encode_bind(buf: &mut BytesMut, portal: &str, statement: &str, rest: &[u8]) {
    with_len(buf, frontend::BIND, |b| {
        b.put_slice(portal.as_bytes());
        b.put_u8(0);
        b.put_slice(statement.as_bytes());
        b.put_u8(0);
        b.put_slice(rest);
    });
}

/// Describe or Close of `kind` `name`.
pub fn encode_target(buf: &mut BytesMut, code: u8, kind: u8, name: &str) {
    with_len(buf, code, |b| {
        b.put_u8(kind);
        b.put_slice(name.as_bytes());
        b.put_u8(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_round_trip() {
        let mut b = BytesMut::new();
        encode_parse(&mut b, "s1", b"select $1\0\0\x01\0\0\0\x17");
        let (name, rest) = parse(&b[5..]).unwrap();
        assert_eq!(name, "s1");
        assert_eq!(rest, b"select $1\0\0\x01\0\0\0\x17");
        let mut b = BytesMut::new();
        encode_bind(&mut b, "", "ocelot_1", b"\0\0\0\0\0\0");
        assert_eq!(
            bind(&b[5..]).unwrap(),
            ("", "ocelot_1", &b"\0\0\0\0\0\0"[..])
        );
        let mut b = BytesMut::new();
        encode_target(&mut b, frontend::DESCRIBE, b'S', "x");
        assert_eq!(target(frontend::DESCRIBE, &b[5..]).unwrap(), (b'S', "x"));
    }

    #[test]
    fn reads_bind_parameters() {
        let rest = b"\0\0\0\x02\0\0\0\x01a\xff\xff\xff\xff\0\0";
        assert_eq!(bind_params(rest).unwrap(), vec![Some(&b"a"[..]), None]);
        let binary = b"\0\x01\0\x01\0\x01\0\0\0\x01a\0\0";
        assert_eq!(bind_params(binary).unwrap(), vec![Some(&b"a"[..])]);
        assert!(bind_params(b"\0\0\0\x01\0\0\0\x09a").is_err());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(parse(b"name").is_err());
        assert!(parse(b"name\0query-without-nul").is_err());
        assert!(bind(b"portal\0").is_err());
        assert!(target(frontend::CLOSE, b"Xname\0").is_err());
        assert!(target(frontend::CLOSE, b"").is_err());
    }
}

/// A Bind's formats and values (`rest` is what follows the statement name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindValues {
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<Vec<u8>>>,
    pub result_formats: Vec<i16>,
}

impl BindValues {
    pub fn decode(rest: &[u8]) -> Result<BindValues, ProtocolError> {
        let mut c = Cursor::new(frontend::BIND, rest);
        let read_i16 = |c: &mut Cursor| -> Result<i16, ProtocolError> {
            let b = c.bytes(2)?;
            Ok(i16::from_be_bytes([b[0], b[1]]))
        };
        let n = read_i16(&mut c)?.max(0) as usize;
        let mut param_formats = Vec::with_capacity(n);
        for _ in 0..n {
            param_formats.push(read_i16(&mut c)?);
        }
        let n = read_i16(&mut c)?.max(0) as usize;
        let mut params = Vec::with_capacity(n);
        for _ in 0..n {
            let len = c.i32()?;
            params.push(if len < 0 {
                None
            } else {
                Some(c.bytes(len as usize)?.to_vec())
            });
        }
        let n = read_i16(&mut c)?.max(0) as usize;
        let mut result_formats = Vec::with_capacity(n);
        for _ in 0..n {
            result_formats.push(read_i16(&mut c)?);
        }
        Ok(BindValues {
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format code of parameter `i`.
    pub fn param_format(&self, i: usize) -> i16 {
        match self.param_formats.as_slice() {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        }
    }

    /// The values (and their formats) of the parameters at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> BindValues {
        BindValues {
            param_formats: indices.iter().map(|&i| self.param_format(i)).collect(),
            params: indices
                .iter()
                .map(|&i| self.params.get(i).cloned().flatten())
                .collect(),
            result_formats: self.result_formats.clone(),
        }
    }
}

/// The query text and parameter type OIDs of a Parse (`rest` is what follows the statement name).
pub fn parse_query(rest: &[u8]) -> Result<(String, Vec<u32>), ProtocolError> {
    let mut c = Cursor::new(frontend::PARSE, rest);
    let sql = String::from_utf8_lossy(c.cstr_bytes()?).into_owned();
    let mut types = Vec::new();
    if let Ok(b) = c.bytes(2) {
        let n = i16::from_be_bytes([b[0], b[1]]).max(0) as usize;
        for _ in 0..n {
            types.push(c.i32()? as u32);
        }
    }
    Ok((sql, types))
}

/// Parse, Bind, Describe (portal), Execute and Sync of one unnamed statement: how Ocelot runs a request on each
/// shard with the client's parameter values and result formats.
pub fn encode_unnamed_request(buf: &mut BytesMut, sql: &str, types: &[u32], bind: &BindValues) {
    with_len(buf, frontend::PARSE, |b| {
        b.put_u8(0);
        b.put_slice(sql.as_bytes());
        b.put_u8(0);
        b.put_i16(types.len() as i16);
        for t in types {
            b.put_u32(*t);
        }
    });
    with_len(buf, frontend::BIND, |b| {
        b.put_u8(0);
        b.put_u8(0);
        b.put_i16(bind.param_formats.len() as i16);
        for f in &bind.param_formats {
            b.put_i16(*f);
        }
        b.put_i16(bind.params.len() as i16);
        for p in &bind.params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(bind.result_formats.len() as i16);
        for f in &bind.result_formats {
            b.put_i16(*f);
        }
    });
    with_len(buf, frontend::DESCRIBE, |b| {
        b.put_u8(b'P');
        b.put_u8(0);
    });
    with_len(buf, frontend::EXECUTE, |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
    with_len(buf, frontend::SYNC, |_| {});
}
