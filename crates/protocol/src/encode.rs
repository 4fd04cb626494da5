//! Encoders for the messages Ocelot writes itself. Each appends to the caller's `BytesMut` and back-patches the
//! length word, so a reply of several messages is one buffer and one write.

use bytes::{BufMut, BytesMut};

use super::codes::{auth, backend, frontend, startup};

/// Writes a type byte and a placeholder length, runs `body`, then patches the length.
fn message(buf: &mut BytesMut, code: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(code);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    patch_len(buf, at);
}

fn patch_len(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Severity of an ErrorResponse: FATAL closes the connection after it, ERROR does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Severity::Error => b"ERROR",
            Severity::Fatal => b"FATAL",
        }
    }
}

/// ErrorResponse with severity, SQLSTATE, message and an optional detail.
pub fn error_response(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    msg: &str,
    detail: Option<&str>,
) {
    message(buf, backend::ERROR_RESPONSE, |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_bytes());
        b.put_u8(b'V');
        cstr(b, severity.as_bytes());
        b.put_u8(b'C');
        cstr(b, code.as_bytes());
        b.put_u8(b'M');
        cstr(b, msg.as_bytes());
        if let Some(d) = detail {
            b.put_u8(b'D');
            cstr(b, d.as_bytes());
        }
        b.put_u8(0);
    });
}

/// NoticeResponse with severity NOTICE.
pub fn notice_response(buf: &mut BytesMut, msg: &str) {
    message(buf, backend::NOTICE_RESPONSE, |b| {
        for (f, v) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', msg),
        ] {
            b.put_u8(f);
            cstr(b, v.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, backend::AUTHENTICATION, |b| b.put_i32(auth::OK));
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, backend::AUTHENTICATION, |b| {
        b.put_i32(auth::MD5_PASSWORD);
        b.put_slice(&salt);
    });
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, backend::AUTHENTICATION, |b| {
        b.put_i32(auth::SASL);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, backend::AUTHENTICATION, |b| {
        b.put_i32(auth::SASL_CONTINUE);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, backend::AUTHENTICATION, |b| {
        b.put_i32(auth::SASL_FINAL);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, backend::PARAMETER_STATUS, |b| {
        cstr(b, name.as_bytes());
        cstr(b, value.as_bytes());
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, backend::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, backend::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version we speak and the `_pq_.` options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unrecognised: &[&str]) {
    message(buf, backend::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(minor);
        b.put_i32(unrecognised.len() as i32);
        for o in unrecognised {
            cstr(b, o.as_bytes());
        }
    });
}

/// StartupMessage (untyped) for protocol 3.0.
pub fn startup_message<'a>(
    buf: &mut BytesMut,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_u32(startup::PROTOCOL_V3);
    for (k, v) in params {
        cstr(buf, k.as_bytes());
        cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    patch_len(buf, at);
}

/// CancelRequest (untyped).
/// SSLRequest: asks a server for TLS before the StartupMessage.
pub fn ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_u32(crate::codes::startup::SSL_REQUEST);
}

pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_u32(startup::CANCEL_REQUEST);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// PasswordMessage (cleartext or md5).
pub fn password(buf: &mut BytesMut, pw: &[u8]) {
    message(buf, frontend::PASSWORD, |b| cstr(b, pw));
}

pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, frontend::PASSWORD, |b| {
        cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, frontend::PASSWORD, |b| b.put_slice(data));
}

/// CommandComplete with `tag`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, backend::COMMAND_COMPLETE, |b| cstr(b, tag.as_bytes()));
}

/// A message with an empty body (ParseComplete, BindComplete, CloseComplete, NoData, ...).
pub fn empty(buf: &mut BytesMut, code: u8) {
    message(buf, code, |_| {});
}

/// ParameterDescription of a statement without parameters.
pub fn no_parameters(buf: &mut BytesMut) {
    message(buf, backend::PARAMETER_DESCRIPTION, |b| b.put_i16(0));
}

/// RowDescription of text columns.
pub fn row_description_text(buf: &mut BytesMut, names: &[&str]) {
    message(buf, backend::ROW_DESCRIPTION, |b| {
        b.put_i16(names.len() as i16);
        for n in names {
            cstr(b, n.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_i32(25); // text
            b.put_i16(-1); // variable size
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text format
        }
    });
}

/// RowDescription of text-format columns of the given types: (name, type OID, type length).
pub fn row_description_typed(buf: &mut BytesMut, columns: &[(&str, u32, i16)]) {
    let with_format: Vec<(&str, u32, i16, i16)> =
        columns.iter().map(|(n, o, l)| (*n, *o, *l, 0)).collect();
    row_description_formats(buf, &with_format);
}

/// RowDescription of columns (name, type OID, type length, format code).
pub fn row_description_formats(buf: &mut BytesMut, columns: &[(&str, u32, i16, i16)]) {
    message(buf, backend::ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        for (name, oid, len, format) in columns {
            cstr(b, name.as_bytes());
            b.put_i32(0);
            b.put_i16(0);
            b.put_u32(*oid);
            b.put_i16(*len);
            b.put_i32(-1);
            b.put_i16(*format);
        }
    });
}

/// ParameterDescription of the given parameter types.
pub fn parameter_description(buf: &mut BytesMut, types: &[u32]) {
    message(buf, backend::PARAMETER_DESCRIPTION, |b| {
        b.put_i16(types.len() as i16);
        for t in types {
            b.put_u32(*t);
        }
    });
}

/// DataRow of raw values (`None` is NULL), each already in its column's format.
pub fn data_row_raw(buf: &mut BytesMut, values: &[Option<Vec<u8>>]) {
    message(buf, backend::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// DataRow of text values.
pub fn data_row_text(buf: &mut BytesMut, values: &[&str]) {
    message(buf, backend::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
    });
}

/// DataRow of optional text values (`None` is NULL).
pub fn data_row_opt(buf: &mut BytesMut, values: &[Option<String>]) {
    message(buf, backend::DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// Parse of `sql` as statement `name`, with no parameter types given.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    message(buf, frontend::PARSE, |b| {
        cstr(b, name.as_bytes());
        cstr(b, sql.as_bytes());
        b.put_i16(0);
    });
}

/// Simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, frontend::QUERY, |b| cstr(b, sql.as_bytes()));
}

/// CopyData carrying `data`.
pub fn copy_data(buf: &mut BytesMut, data: &[u8]) {
    message(buf, frontend::COPY_DATA, |b| b.put_slice(data));
}

/// CopyDone.
pub fn copy_done(buf: &mut BytesMut) {
    message(buf, frontend::COPY_DONE, |_| {});
}

/// CopyFail with a reason.
pub fn copy_fail(buf: &mut BytesMut, reason: &str) {
    message(buf, frontend::COPY_FAIL, |b| cstr(b, reason.as_bytes()));
}

pub fn terminate(buf: &mut BytesMut) {
    message(buf, frontend::TERMINATE, |_| {});
}

#[cfg(test)]
mod tests {
    use super::super::decode;
    use super::*;

    #[test]
    fn error_round_trips() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "28P01", "bad", Some("d"));
        assert_eq!(b[0], b'E');
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        let f = decode::error_fields(&b[5..]).unwrap();
        assert_eq!(f.code, "28P01");
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.detail.as_deref(), Some("d"));
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, b'I');
        assert_eq!(&b[..], &[b'Z', 0, 0, 0, 5, b'I']);
    }
}
