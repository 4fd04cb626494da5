//! Sans-IO PostgreSQL v3 wire protocol: message codes, framing of the byte stream into messages, typed views of
//! the few messages Ocelot inspects, encoders for the messages it writes itself, and the authentication exchanges
//! (md5 and SCRAM-SHA-256). Nothing here touches a socket, so every piece is tested with plain byte slices.
//!
//! Protocol reference: <https://www.postgresql.org/docs/15/protocol-message-formats.html>.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod auth;
pub mod codes;
pub mod decode;
pub mod encode;
pub mod error;
pub mod extended;
pub mod frame;
pub mod rows;
pub mod startup;

pub use error::ProtocolError;
