//! Typed, borrowing views of the messages Ocelot reads: a bounds-checked cursor over a body, and parsers for the
//! backend messages it inspects (Authentication, ParameterStatus, BackendKeyData, ReadyForQuery, ErrorResponse,
//! CommandComplete) and the frontend password/SASL messages. Nothing here panics on short or malformed input.

use super::ProtocolError;

/// A bounds-checked reader over a message body.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    code: u8,
}

impl<'a> Cursor<'a> {
    /// A cursor over `body`, the bytes after the length word of a message of type `code`.
    pub fn new(code: u8, body: &'a [u8]) -> Self {
        Cursor { buf: body, code }
    }

    fn truncated(&self) -> ProtocolError {
        ProtocolError::Truncated {
            code: self.code as char,
        }
    }

    /// Bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.truncated())?;
        self.buf = rest;
        Ok(b)
    }

    #[inline]
    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(self.truncated());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated byte string, without its terminator.
    #[inline]
    pub(crate) fn cstr_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let pos = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::MissingNul {
                code: self.code as char,
            })?;
        let s = &self.buf[..pos];
        self.buf = &self.buf[pos + 1..];
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.cstr_bytes()?).map_err(|_| ProtocolError::InvalidUtf8 { what })
    }
}

/// The body of a server's Authentication ('R') message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a str> },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Other(i32),
}

/// Parses an Authentication message body.
pub fn auth_request(body: &[u8]) -> Result<AuthRequest<'_>, ProtocolError> {
    use super::codes::auth;
    let mut c = Cursor::new(b'R', body);
    Ok(match c.i32()? {
        auth::OK => AuthRequest::Ok,
        auth::CLEARTEXT_PASSWORD => AuthRequest::Cleartext,
        auth::MD5_PASSWORD => {
            let s = c.bytes(4)?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        auth::SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let m = c.cstr("SASL mechanism")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        auth::SASL_CONTINUE => AuthRequest::SaslContinue(c.rest()),
        auth::SASL_FINAL => AuthRequest::SaslFinal(c.rest()),
        other => AuthRequest::Other(other),
    })
}

/// ParameterStatus: (name, value).
#[inline]
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let mut c = Cursor::new(b'S', body);
    Ok((c.cstr("parameter name")?, c.cstr("parameter value")?))
}

/// BackendKeyData: (process id, secret key).
pub fn backend_key_data(body: &[u8]) -> Result<(i32, i32), ProtocolError> {
    let mut c = Cursor::new(b'K', body);
    Ok((c.i32()?, c.i32()?))
}

/// ReadyForQuery: the transaction status byte.
#[inline]
pub fn ready_for_query(body: &[u8]) -> Result<u8, ProtocolError> {
    Cursor::new(b'Z', body).u8()
}

/// CommandComplete: the command tag, e.g. `SELECT 1` or `SET`.
#[inline]
pub fn command_tag(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Cursor::new(b'C', body).cstr_bytes()
}

/// The fields of an ErrorResponse or NoticeResponse that Ocelot reports or logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// Parses an ErrorResponse/NoticeResponse body (a list of code byte + string fields, ended by a zero byte).
pub fn error_fields(body: &[u8]) -> Result<ErrorFields, ProtocolError> {
    let mut c = Cursor::new(b'E', body);
    let mut out = ErrorFields::default();
    loop {
        let field = c.u8()?;
        if field == 0 {
            break;
        }
        let value = String::from_utf8_lossy(c.cstr_bytes()?).into_owned();
        match field {
            b'V' => out.severity = value,
            b'S' if out.severity.is_empty() => out.severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            b'D' => out.detail = Some(value),
            _ => {}
        }
    }
    Ok(out)
}

/// One field (by its code byte, e.g. `b'C'` for the SQLSTATE) of an ErrorResponse/NoticeResponse body, without
/// decoding the others; `None` when absent or the body is malformed.
pub fn error_field(body: &[u8], field: u8) -> Option<&[u8]> {
    let mut c = Cursor::new(b'E', body);
    loop {
        let code = c.u8().ok()?;
        if code == 0 {
            return None;
        }
        let value = c.cstr_bytes().ok()?;
        if code == field {
            return Some(value);
        }
    }
}

/// A client's SASLInitialResponse: the chosen mechanism and the client-first-message.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let mut c = Cursor::new(b'p', body);
    let mechanism = c.cstr("SASL mechanism")?;
    let len = c.i32()?;
    let data = if len < 0 {
        &[][..]
    } else {
        c.bytes(len as usize)?
    };
    Ok((mechanism, data))
}

/// A client's PasswordMessage: the (md5-hashed or cleartext) password.
pub fn password(body: &[u8]) -> Result<&str, ProtocolError> {
    Cursor::new(b'p', body).cstr("password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_never_panics_on_short_input() {
        let mut c = Cursor::new(b'K', &[0, 0, 1]);
        assert!(c.i32().is_err());
        assert!(backend_key_data(&[]).is_err());
        assert!(parameter_status(b"name").is_err());
        assert!(ready_for_query(&[]).is_err());
        assert!(error_fields(b"Sfoo").is_err());
        assert!(auth_request(&[0, 0, 0, 5, 1]).is_err());
        assert!(sasl_initial_response(b"SCRAM\0\0\0\0\x09ab").is_err());
    }

    #[test]
    fn parses_error_fields() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        let f = error_fields(body).unwrap();
        assert_eq!(f.code, "42P01");
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.message, "relation \"x\" does not exist");
    }

    #[test]
    fn parses_auth_requests() {
        assert_eq!(auth_request(&[0, 0, 0, 0]).unwrap(), AuthRequest::Ok);
        assert_eq!(
            auth_request(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        let mut sasl = vec![0, 0, 0, 10];
        sasl.extend_from_slice(b"SCRAM-SHA-256\0\0");
        assert_eq!(
            auth_request(&sasl).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            }
        );
    }
}
