//! Errors in bytes a peer sent: each maps to SQLSTATE 08P01 (protocol_violation) when reported to a client.

use thiserror::Error;

/// A malformed message or stream from a peer. The connection that produced it cannot continue.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("invalid message length {len}: a length counts itself and must be at least 4")]
    LengthTooSmall { len: u32 },
    #[error("message of type '{code}' is {len} bytes, above the limit of {max}")]
    TooLarge { code: char, len: u32, max: u32 },
    #[error("invalid startup packet length {len}")]
    BadStartupLength { len: u32 },
    #[error("unknown message type '{}' (0x{:02x})", *.0 as char, .0)]
    UnknownType(u8),
    #[error("message of type '{code}' is truncated")]
    Truncated { code: char },
    #[error("missing string terminator in message of type '{code}'")]
    MissingNul { code: char },
    #[error("invalid UTF-8 in {what}")]
    InvalidUtf8 { what: &'static str },
    #[error("unexpected message of type '{got}' while expecting {expected}")]
    Unexpected { got: char, expected: &'static str },
    #[error("{0}")]
    Invalid(String),
}
