//! Named message codes. Frontend and backend codes are kept apart because the same byte means different things in
//! each direction ('D' is Describe from a client and DataRow from a server, 'E' Execute or ErrorResponse).
//! <https://www.postgresql.org/docs/15/protocol-message-formats.html>

/// Codes of messages a client (frontend) sends.
pub mod frontend {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    /// PasswordMessage, SASLInitialResponse and SASLResponse all use 'p'.
    pub const PASSWORD: u8 = b'p';

    /// Whether `code` is a message type a v3 frontend may send after startup.
    #[inline]
    pub fn is_known(code: u8) -> bool {
        matches!(
            code,
            QUERY
                | PARSE
                | BIND
                | DESCRIBE
                | EXECUTE
                | CLOSE
                | SYNC
                | FLUSH
                | FUNCTION_CALL
                | TERMINATE
                | COPY_DATA
                | COPY_DONE
                | COPY_FAIL
                | PASSWORD
        )
    }
}

/// Codes of messages a server (backend) sends.
pub mod backend {
    pub const AUTHENTICATION: u8 = b'R';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const NO_DATA: u8 = b'n';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
}

/// Request codes of the untyped first message of a connection.
/// <https://www.postgresql.org/docs/15/protocol-message-formats.html> (StartupMessage, SSLRequest, ...).
pub(crate) mod startup {
    /// Protocol 3.0: major 3 in the high 16 bits, minor 0 in the low.
    pub(crate) const PROTOCOL_V3: u32 = 3 << 16;
    pub(crate) const SSL_REQUEST: u32 = 80_877_103;
    pub(crate) const GSSENC_REQUEST: u32 = 80_877_104;
    pub(crate) const CANCEL_REQUEST: u32 = 80_877_102;
}

/// Subcodes of the Authentication ('R') message.
pub(crate) mod auth {
    pub(crate) const OK: i32 = 0;
    pub(crate) const CLEARTEXT_PASSWORD: i32 = 3;
    pub(crate) const MD5_PASSWORD: i32 = 5;
    pub(crate) const SASL: i32 = 10;
    pub(crate) const SASL_CONTINUE: i32 = 11;
    pub(crate) const SASL_FINAL: i32 = 12;
}

/// Transaction status byte of ReadyForQuery.
pub mod txn {
    pub const IDLE: u8 = b'I';
    pub const IN_TRANSACTION: u8 = b'T';
    pub const FAILED: u8 = b'E';
}

/// SQLSTATE codes Ocelot reports itself. <https://www.postgresql.org/docs/15/errcodes-appendix.html>
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    pub const QUERY_CANCELED: &str = "57014";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
    /// PgCat's answer to a bad admin command (clients see `PG::SystemError`).
    pub const SYSTEM_ERROR: &str = "58000";
}
