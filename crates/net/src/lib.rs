//! The I/O layer under the protocol: reading whole messages off a socket into a reusable buffer for the phases
//! that inspect every message (startup, authentication), TCP socket options, and the stream type (TCP, Unix
//! socket, TLS) every connection uses.

#![deny(clippy::unwrap_used, clippy::todo, clippy::dbg_macro)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod read;
mod socket;
mod stream;
pub mod tls;

pub use read::{read_message, read_startup_packet, NetError};
pub use socket::{configure_client_socket, configure_server_socket, Keepalive};
pub use stream::Stream;
