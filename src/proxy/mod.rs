//! The client side of Ocelot: the accept loops, each client's login and session, and the timeouts that watch
//! them. The listeners are bound and these loops started by `app::Proxy`.

pub(crate) mod auth_query;
pub(crate) mod error;
pub(crate) mod extfan;
pub(crate) mod login;
pub(crate) mod machine;
pub(crate) mod notify;
pub(crate) mod session;
pub(crate) mod session_state;
pub(crate) mod statements;
pub(crate) mod tracker;
pub(crate) mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::net::configure_client_socket;
use crate::protocol::encode;
use crate::shared::{cancel, Shared};
use error::ClientError;
use login::Login;
use session::Session;

pub(crate) async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle_client(crate::net::Stream::Unix(stream), None, shared).await
                });
            }
            Err(e) => {
                tracing::error!("accept on the Unix socket failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle_tcp_client(stream, peer, shared).await });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_tcp_client(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let g = &shared.snapshot().config.general;
    configure_client_socket(&stream, g.keepalive());
    handle_client(crate::net::Stream::Tcp(stream), Some(peer), shared).await
}

async fn handle_client(
    mut stream: crate::net::Stream,
    addr: Option<SocketAddr>,
    shared: Arc<Shared>,
) {
    let token = shared.shutdown.client_token();
    let snapshot = shared.snapshot();
    let g = &snapshot.config.general;
    let peer = addr.map_or_else(|| "unix socket".to_owned(), |a| a.to_string());
    let mut buf = BytesMut::with_capacity(1024);
    let block = Duration::from_millis(g.auth_failure_block_ms);
    let ip = addr.map(|a| a.ip());
    if let Some(ip) = ip {
        if !shared.auth_failures.allowed(ip, g.max_auth_failures, block) {
            report(&mut stream, &ClientError::AuthThrottled).await;
            tracing::warn!(%peer, "login refused: too many failed authentication attempts");
            return;
        }
    }
    let login_timeout = Duration::from_millis(g.client_login_timeout);
    let login =
        match tokio::time::timeout(login_timeout, login::login(&mut stream, &mut buf, &shared))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::LoginTimeout),
        };
    let mut login = match login {
        Ok(Login::Cancel { pid, secret }) => return forward_cancel(&shared, pid, secret).await,
        Ok(Login::Ready(l)) => l,
        Ok(Login::Admin {
            console,
            database,
            user,
            application_name,
        }) => {
            // An open console does not hold up a shutdown.
            drop(token);
            let _listed = shared
                .clients
                .register(&database, &user, &application_name, addr);
            if let Err(e) = crate::admin::serve(stream, buf, shared.clone(), console).await {
                tracing::debug!(%peer, "admin session ended: {e}");
            }
            return;
        }
        Err(e) => {
            if let (Some(ip), true) = (ip, e.is_wrong_password()) {
                shared.auth_failures.failed(ip, block);
            }
            report(&mut stream, &e).await;
            if e.sqlstate().is_some() {
                tracing::info!(%peer, "login refused: {e}");
            }
            return;
        }
    };
    if let Some(ip) = ip {
        shared.auth_failures.succeeded(ip);
    }
    run_session(stream, buf, &mut login, addr, &shared).await;
}

/// Runs the session of a client that logged in to a pool, registered in `SHOW CLIENTS` while it lasts.
async fn run_session(
    stream: crate::net::Stream,
    buf: BytesMut,
    login: &mut login::LoggedIn,
    addr: Option<SocketAddr>,
    shared: &Arc<Shared>,
) {
    let snapshot = shared.snapshot();
    let g = &snapshot.config.general;
    let peer = addr.map_or_else(|| "unix socket".to_owned(), |a| a.to_string());
    if g.log_client_connections {
        tracing::info!(%peer, user = %login.user, database = %login.database, application_name = %login.application_name, "client connected");
    }
    let client =
        shared
            .clients
            .register(&login.database, &login.user, &login.application_name, addr);
    let _ = client
        .info
        .cancel_key
        .set((login.registration.slot.pid, login.registration.slot.secret));
    client.info.statement_timeout_ms.store(
        login.pool.settings.statement_timeout_ms,
        std::sync::atomic::Ordering::Relaxed,
    );
    // Registered after a shutdown began drains at once (shutdown drains the clients it finds registered).
    if shared.shutdown.is_draining() {
        client.info.drain();
    }
    let reserved = login.reserved.take();
    let session = Box::new(Session::new(
        stream,
        buf,
        login,
        reserved,
        g.max_message_size,
        client.info.clone(),
        shared.clone(),
    ));
    let result = session.run().await;
    match &result {
        Err(e) if e.is_notable() => tracing::warn!(%peer, user = %login.user, "session ended: {e}"),
        Err(e) => tracing::debug!(%peer, user = %login.user, "session ended: {e}"),
        Ok(_) => {}
    }
    if g.log_client_disconnections {
        tracing::info!(%peer, user = %login.user, database = %login.database, "client disconnected");
    }
}

/// Forwards a client's CancelRequest to the server running its query, when the key is one Ocelot gave out.
async fn forward_cancel(shared: &Shared, pid: i32, secret: i32) {
    if let Some(target) = shared.cancels.lookup(pid, secret) {
        if let Err(e) = cancel::send_cancel(&target).await {
            tracing::warn!(
                "forwarding a cancel request to {}:{} failed: {e}",
                target.host,
                target.port
            );
        }
    }
}

/// Sends a FATAL ErrorResponse for `e` when the client can still receive it.
async fn report(stream: &mut crate::net::Stream, e: &ClientError) {
    if let Some(code) = e.sqlstate() {
        let mut b = BytesMut::new();
        encode::error_response(&mut b, e.severity(), code, &e.to_string(), None);
        let _ = stream.write_all(&b).await;
        let _ = stream.shutdown().await;
    }
}
