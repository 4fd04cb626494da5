//! The untyped first message of a connection: StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.
//! <https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-START-UP>

use super::codes::startup as code;
use super::decode::Cursor;
use super::ProtocolError;

/// PostgreSQL's own limit on the startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub(crate) const MAX_STARTUP_LEN: u32 = 10_000;

/// What a client asked for in its first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// A v3 StartupMessage. `minor` above 0 and `_pq_.` options are answered with NegotiateProtocolVersion.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// A protocol major version other than 3.
    Unsupported {
        major: u16,
        minor: u16,
    },
}

/// The length word of a startup packet at the start of `buf`, validated; `Ok(None)` when fewer than 4 bytes.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let Some(h) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadStartupLength { len });
    }
    Ok(Some(len as usize))
}

/// Parses a whole startup packet (length word included).
pub fn parse(packet: &[u8]) -> Result<StartupRequest, ProtocolError> {
    let mut c = Cursor::new(b'0', packet.get(4..).unwrap_or_default());
    let version = c.i32()? as u32;
    match version {
        code::SSL_REQUEST => Ok(StartupRequest::Ssl),
        code::GSSENC_REQUEST => Ok(StartupRequest::GssEnc),
        code::CANCEL_REQUEST => Ok(StartupRequest::Cancel {
            pid: c.i32()?,
            secret: c.i32()?,
        }),
        v => {
            let (major, minor) = ((v >> 16) as u16, (v & 0xffff) as u16);
            if major != 3 {
                return Ok(StartupRequest::Unsupported { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let name = c.cstr("startup parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = c.cstr("startup parameter value")?;
                params.push((name.to_owned(), value.to_owned()));
            }
            Ok(StartupRequest::Startup { minor, params })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use bytes::BytesMut;

    #[test]
    fn parses_startup_message() {
        let mut b = BytesMut::new();
        encode::startup_message(&mut b, [("user", "alice"), ("database", "db")]);
        assert_eq!(packet_len(&b).unwrap(), Some(b.len()));
        match parse(&b).unwrap() {
            StartupRequest::Startup { minor, params } => {
                assert_eq!(minor, 0);
                assert_eq!(params[0], ("user".into(), "alice".into()));
                assert_eq!(params[1], ("database".into(), "db".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_special_requests() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(parse(&ssl).unwrap(), StartupRequest::Ssl);
        let mut b = BytesMut::new();
        encode::cancel_request(&mut b, 42, -7);
        assert_eq!(
            parse(&b).unwrap(),
            StartupRequest::Cancel {
                pid: 42,
                secret: -7
            }
        );
        let v2 = [0, 0, 0, 8, 0, 2, 0, 0];
        assert_eq!(
            parse(&v2).unwrap(),
            StartupRequest::Unsupported { major: 2, minor: 0 }
        );
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(packet_len(&[0, 0, 0, 2]).is_err());
        assert!(packet_len(&[0, 1, 0, 0]).is_err());
        let no_terminator = [0, 0, 0, 13, 0, 3, 0, 0, b'u', b's', b'e', b'r', 0];
        assert!(parse(&no_terminator).is_err());
        let bad_utf8 = [0, 0, 0, 14, 0, 3, 0, 0, b'u', 0, 0xff, 0xfe, 0, 0];
        assert!(matches!(
            parse(&bad_utf8),
            Err(ProtocolError::InvalidUtf8 { .. })
        ));
    }
}
