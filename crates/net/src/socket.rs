//! TCP options: no Nagle delay on either side (each message is latency-bound), and keepalives on client and
//! server sockets (PgCat applies `tcp_keepalives_*` to its server connections; Ocelot to both).

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

pub use ocelot_config::Keepalive;
use tokio::net::TcpStream;

/// Sets TCP_NODELAY and keepalives on an accepted client socket. Failures are logged, not fatal.
pub fn configure_client_socket(s: &TcpStream, k: Keepalive) {
    if let Err(e) = s.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on client socket: {e}");
    }
    set_keepalive(s, k, "client");
}

/// Sets TCP_NODELAY and keepalives on a server socket.
pub fn configure_server_socket(s: &TcpStream, k: Keepalive) {
    if let Err(e) = s.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on server socket: {e}");
    }
    set_keepalive(s, k, "server");
}

/// Keepalives as `k` says; an idle time of 0 leaves the socket's defaults.
fn set_keepalive(s: &TcpStream, k: Keepalive, side: &str) {
    if k.idle_s == 0 {
        return;
    }
    let sock = SockRef::from(s);
    let ka = TcpKeepalive::new()
        .with_time(Duration::from_secs(k.idle_s))
        .with_interval(Duration::from_secs(k.interval_s.max(1)));
    #[cfg(target_os = "linux")]
    let ka = ka.with_retries(k.count.max(1));
    if let Err(e) = sock.set_tcp_keepalive(&ka) {
        tracing::debug!("keepalive on {side} socket: {e}");
    }
    #[cfg(target_os = "linux")]
    if k.user_timeout_ms > 0 {
        let _ = sock.set_tcp_user_timeout(Some(Duration::from_millis(k.user_timeout_ms)));
    }
}
