//! TCP options: no Nagle delay on either side (each message is latency-bound), keepalives on client sockets.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Keepalive settings from `[general]`.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub idle_s: u64,
    pub interval_s: u64,
    pub count: u32,
    pub user_timeout_ms: u64,
}

/// Sets TCP_NODELAY and keepalives on an accepted client socket. Failures are logged, not fatal.
pub fn configure_client_socket(s: &TcpStream, k: Keepalive) {
    if let Err(e) = s.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on client socket: {e}");
    }
    let sock = SockRef::from(s);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(k.idle_s))
        .with_interval(Duration::from_secs(k.interval_s));
    #[cfg(target_os = "linux")]
    let ka = ka.with_retries(k.count);
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!("keepalive on client socket: {e}");
    }
    #[cfg(target_os = "linux")]
    if k.user_timeout_ms > 0 {
        let _ = sock.set_tcp_user_timeout(Some(Duration::from_millis(k.user_timeout_ms)));
    }
}

/// Sets TCP_NODELAY on a server socket.
pub fn configure_server_socket(s: &TcpStream) {
    if let Err(e) = s.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on server socket: {e}");
    }
}
