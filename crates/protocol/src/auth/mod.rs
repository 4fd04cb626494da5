//! Password authentication, both ways. Towards clients Ocelot is the server: it checks md5 responses and runs the
//! server side of SCRAM-SHA-256 from a secret derived once per user. Towards PostgreSQL it is the client and
//! answers cleartext, md5 and SCRAM requests (the SCRAM client comes from `postgres-protocol`).

pub mod md5;
pub mod scram;

use thiserror::Error;

pub use scram::{ScramKeyClient, ScramKeys, ScramServer, ScramVerifier};

/// A user's password as configured: cleartext, an md5 hash (`md5` + 32 hex, as in `pg_shadow`), or a SCRAM
/// verifier (`SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`). Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Md5Hash(String),
    Scram(String),
    /// Keys from a client's SCRAM exchange, for logging in to servers on its behalf (`auth_query` users).
    ScramKeys(ScramKeys),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Secret::Plain(_) => "Plain",
            Secret::Md5Hash(_) => "Md5Hash",
            Secret::Scram(_) => "Scram",
            Secret::ScramKeys(_) => "ScramKeys",
        };
        write!(f, "Secret::{kind}(<redacted>)")
    }
}

impl Secret {
    /// Classifies a configured password string.
    pub fn parse(s: &str) -> Secret {
        if s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            Secret::Md5Hash(s.to_owned())
        } else if s.starts_with("SCRAM-SHA-256$") {
            Secret::Scram(s.to_owned())
        } else {
            Secret::Plain(s.to_owned())
        }
    }

    /// Whether a client can prove knowledge of this secret with md5.
    pub fn supports_md5(&self) -> bool {
        matches!(self, Secret::Plain(_) | Secret::Md5Hash(_))
    }

    /// Whether a client can prove knowledge of this secret with SCRAM-SHA-256.
    pub fn supports_scram(&self) -> bool {
        matches!(self, Secret::Plain(_) | Secret::Scram(_))
    }

    /// The SCRAM verifier for this secret; for a cleartext password one is derived with a fresh salt.
    pub fn scram_verifier(&self) -> Result<ScramVerifier, AuthError> {
        match self {
            Secret::Plain(p) => {
                ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(p.as_bytes()))
            }
            Secret::Scram(v) => ScramVerifier::parse(v),
            Secret::Md5Hash(_) | Secret::ScramKeys(_) => Err(AuthError::Unsupported(
                "an md5 password hash cannot be used for SCRAM authentication",
            )),
        }
    }
}

/// Failure of an authentication exchange.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The proof did not match: reported to clients as 28P01.
    #[error("password authentication failed")]
    WrongPassword,
    /// The peer sent something that is not a valid step of the exchange.
    #[error("malformed authentication message: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Compares two cancel secrets in constant time.
pub fn constant_time_eq_i32(a: i32, b: i32) -> bool {
    constant_time_eq(&a.to_be_bytes(), &b.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_secrets_and_redacts() {
        assert!(matches!(Secret::parse("hunter2"), Secret::Plain(_)));
        let h = postgres_protocol::password::md5(b"pw", "u");
        assert!(matches!(Secret::parse(&h), Secret::Md5Hash(_)));
        let v = postgres_protocol::password::scram_sha_256(b"pw");
        assert!(matches!(Secret::parse(&v), Secret::Scram(_)));
        assert!(!format!("{:?}", Secret::parse("hunter2")).contains("hunter2"));
    }
}
