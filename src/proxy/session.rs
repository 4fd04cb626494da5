//! The life of a logged-in client: messages are forwarded as bytes between the client and whichever server it
//! holds, checked out on its first message and (in transaction mode) given back as soon as the server says the
//! session is idle and owes nothing. Only message headers are read on the way, plus the bodies of the few server
//! messages that change what Ocelot tracks (ReadyForQuery, ParameterStatus, CommandComplete, CopyInResponse).
//! Large messages are streamed through in pieces, so memory per client stays bounded.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::error::ClientError;
use super::login::LoggedIn;
use super::machine::{Core, Discard};
use super::notify::{self, Notifications};
use super::statements::{self, ClientAction};
use super::tracker::TxnTracker;
use crate::config::PoolMode;
use crate::database::balance::Want;
use crate::database::UserPool;
use crate::pool::params::is_tracked;
use crate::pool::{PoolError, Pooled, ServerConn};
use crate::protocol::codes::{backend, frontend, txn};
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::{Piece, Splitter};
use crate::protocol::ProtocolError;
use crate::router::commands::RoleChoice;
use crate::router::session_sql::SessionCommand;
use crate::shared::cancel::CancelSlot;
use crate::stats::{ClientInfo, ClientState, Stop};

/// Read buffers grow to at least this much free space before each read.
const READ_CHUNK: usize = 16 * 1024;
/// While no server is held, the client's buffer only needs room for a typical request: thousands of idle clients
/// then cost little. A larger request grows it as its header asks.
const IDLE_READ: usize = 2 * 1024;
/// An idle client's empty buffer above this size (left by a large message) is given back.
const SHRINK_ABOVE: usize = 64 * 1024;
/// Requests a client sent ahead that wait for the server (pipelined, or held back for routing) are read up to
/// this much (or one whole message, if larger). Beyond it Ocelot stops reading from the client until the server
/// has answered, so a client that sends without reading cannot grow Ocelot's memory: it is the kernel's socket
/// buffers that fill up and block the client.
const AHEAD_MAX: usize = 256 * 1024;

/// How a session ended normally.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The client sent Terminate or closed its socket.
    ClientLeft,
    /// Shutdown: the client was told and disconnected.
    Shutdown,
}

/// One client's session.
pub(crate) struct Session {
    client: crate::net::Stream,
    cbuf: BytesMut,
    csplit: Splitter,
    server: Option<Pooled>,
    /// The protocol state, without I/O.
    core: Core,
    pool: Arc<UserPool>,
    slot: Arc<CancelSlot>,
    /// Bytes for the server when some client messages were rewritten or dropped (otherwise bytes are written
    /// straight from `cbuf`).
    sout: BytesMut,
    /// LISTEN subscriptions served by the pool's shared LISTEN connection (transaction mode).
    notify: Option<Notifications>,
    /// An unnamed extended-protocol LISTEN/UNLISTEN that Ocelot is answering itself.
    local_ext: Option<SessionCommand>,
    /// `SET SERVER ROLE` (None: automatic) and `SET PRIMARY READS` (None: the pool's setting).
    role_override: Option<RoleChoice>,
    primary_reads_override: Option<bool>,
    /// Read/write routes and sharding-key positions of the query shapes this client sent.
    analyzer: crate::router::route::Analyzer,
    /// What the attached server was chosen for.
    attached_want: Option<Want>,
    attached_shard: usize,
    /// `SET SHARD` / `SET SHARDING KEY`: `Some(None)` is `SET SHARD TO 'ANY'`.
    shard_override: Option<Option<usize>>,
    /// A BEGIN answered by Ocelot, sent to the shard of the transaction's first statement.
    pending_begin: Option<String>,
    /// How the current transaction began, for shards that join it later.
    txn_begin: String,
    /// The other shards' connections of a transaction that spans shards.
    parked: Vec<multi::Parked>,
    /// An extended-protocol request was refused: its messages are dropped up to its Sync.
    /// The COPY being split came as a simple Query (else the client's Sync ends it).
    copy_simple: bool,
    /// A request waits in `cbuf` for the server to finish the one before (a pgml.* call Ocelot answers itself).
    held_back: bool,
    /// `pgml.*` statements Ocelot answers over the extended protocol.
    pgml: Option<Box<pgml_ext::PgmlStatements>>,
    /// Shapes of the `pgml.*` statement texts this client prepared, by text and parameter types.
    pgml_shapes: pgml_ext::ShapeCache,
    /// Shutdown (drain) and `KILL`.
    stop: watch::Receiver<Stop>,
    /// This client as `SHOW CLIENTS` sees it.
    info: Arc<ClientInfo>,
    /// The proxy's shared state, to follow config reloads, and the reload generation this session is on.
    shared: Arc<crate::shared::Shared>,
    generation: u64,
    /// When the request being answered and the transaction around it began, for the stats.
    request_started: Option<Instant>,
    xact_started: Option<Instant>,
    /// The transaction was rolled back for idling too long: the next request is told so (`timeouts.rs`).
    txn_timed_out: bool,
    /// Requests that could not get a server, for `checkout_failure_limit`.
    checkout_failures: u64,
    /// The message at the front of `cbuf` went through [`Session::rewrite_prepared_view`] already.
    view_rewritten: bool,
    /// Session mode on a one-server pool: the server checked out at login, whose process id the client was
    /// given, taken by the first request that needs a server.
    reserved: Option<Pooled>,
}

impl Session {
    pub(crate) fn new(
        client: crate::net::Stream,
        cbuf: BytesMut,
        login: &LoggedIn,
        reserved: Option<Pooled>,
        max_message: u32,
        info: Arc<ClientInfo>,
        shared: Arc<crate::shared::Shared>,
    ) -> Self {
        Session {
            client,
            cbuf,
            csplit: Splitter::new(max_message),
            server: None,
            core: Core::new(
                login.pool.settings.pool_mode,
                login.params.clone(),
                login.pool.prepared_cache > 0,
            ),
            reserved,
            pool: login.pool.clone(),
            slot: login.registration.slot.clone(),
            sout: BytesMut::new(),
            notify: None,
            local_ext: None,
            role_override: None,
            primary_reads_override: None,
            analyzer: Default::default(),
            attached_want: None,
            attached_shard: 0,
            shard_override: None,
            pending_begin: None,
            txn_begin: "BEGIN".into(),
            parked: Vec::new(),
            copy_simple: true,
            held_back: false,
            pgml: None,
            pgml_shapes: Default::default(),
            stop: info.stop_signal(),
            info,
            generation: shared.generation.load(std::sync::atomic::Ordering::Acquire),
            shared,
            request_started: None,
            xact_started: None,
            txn_timed_out: false,
            checkout_failures: 0,
            view_rewritten: false,
        }
    }

    /// Runs until the client leaves, an error ends the session, or shutdown. On error, the client is sent an
    /// ErrorResponse when it can still hear one.
    ///
    /// The session is boxed: an `async fn` taking `self` by value keeps two copies of it in its future, and the
    /// future is what every connected client costs.
    pub(crate) async fn run(mut self: Box<Self>) -> Result<End, ClientError> {
        let result = self.run_inner().await;
        match &result {
            Err(e) => {
                if let Some(code) = e.sqlstate() {
                    let mut b = BytesMut::new();
                    encode::error_response(&mut b, Severity::Fatal, code, &e.to_string(), None);
                    let _ = self.client.write_all(&b).await;
                }
            }
            Ok(End::Shutdown) => {
                let e = ClientError::AdminShutdown;
                let mut b = BytesMut::new();
                encode::error_response(
                    &mut b,
                    Severity::Fatal,
                    e.sqlstate().unwrap_or_default(),
                    &e.to_string(),
                    None,
                );
                let _ = self.client.write_all(&b).await;
            }
            Ok(End::ClientLeft) => {}
        }
        self.release_on_exit();
        self.stop_listening();
        result
    }

    /// A server still in the middle of answering cannot be cleaned reliably: it is closed instead. One the client
    /// still held (session mode, a pinned or unfinished transaction-mode session) may carry state no command tag
    /// shows, so it is reset with DISCARD ALL before anyone else gets it.
    fn release_on_exit(&mut self) {
        // Parked parts of a cross-shard transaction are idle in it: the pool rolls them back.
        self.parked.clear();
        if let Some(mut server) = self.server.take() {
            if self.core.tracker.is_busy()
                || self.csplit.is_streaming()
                || self.core.ssplit.is_streaming()
            {
                server.broken = true;
            }
            server.state.dirty.discard_all = true;
            self.slot.detach();
        }
    }

    async fn run_inner(&mut self) -> Result<End, ClientError> {
        let stop = *self.stop.borrow();
        if let Some(e) = stop_reason(stop) {
            return Err(e);
        }
        let mut draining = stop == Stop::Drain;
        loop {
            if draining && self.server.is_none() {
                return Ok(End::Shutdown);
            }
            let event = self.next_event().await;
            match event {
                Event::Server(Ok(0)) => {
                    if !Box::pin(self.failover("server closed the connection")).await? {
                        return Err(self.server_lost("server closed the connection"));
                    }
                }
                Event::Server(Ok(n)) => {
                    if let Some(end) = self.on_server_read(n).await? {
                        return Ok(end);
                    }
                }
                Event::Server(Err(e)) => {
                    if !Box::pin(self.failover(&e.to_string())).await? {
                        return Err(self.server_lost(&e.to_string()));
                    }
                }
                Event::Client(r) => {
                    if r? == 0 {
                        return Ok(End::ClientLeft);
                    }
                    self.info.last_active.store(crate::stats::now_us(), Relaxed);
                    if let Some(end) = self.on_client_bytes().await? {
                        return Ok(end);
                    }
                }
                Event::Stop if *self.stop.borrow() == Stop::IdleInTransaction => {
                    self.idle_in_transaction_timeout().await?;
                }
                Event::Stop => {
                    let stop = *self.stop.borrow();
                    if let Some(e) = stop_reason(stop) {
                        return Err(e);
                    }
                    draining |= stop == Stop::Drain;
                }
                Event::Notification(Some(msg)) => self.notification(msg).await?,
                Event::Notification(None) => {}
            }
            if self.server.is_none() {
                self.flush_notifications().await?;
            }
            if draining
                && self.server.is_some()
                && self.core.tracker.is_idle()
                && self.cbuf.is_empty()
            {
                self.release();
                return Ok(End::Shutdown);
            }
        }
    }

    /// Waits for the next thing to act on: bytes from the server or the client (the client is not read while
    /// enough of its requests wait for the server), a stop signal, or a notification.
    async fn next_event(&mut self) -> Event {
        let want = if self.server.is_some() {
            READ_CHUNK
        } else {
            if self.cbuf.is_empty() && self.cbuf.capacity() > SHRINK_ABOVE {
                self.cbuf = BytesMut::with_capacity(IDLE_READ);
            }
            IDLE_READ
        };
        let read_client = self.server.is_none()
            || self.cbuf.len() < AHEAD_MAX.max(self.csplit.wanted(&self.cbuf));
        if read_client && self.cbuf.capacity() - self.cbuf.len() < want {
            self.cbuf.reserve(want);
        }
        match self.server.as_mut() {
            Some(pooled) => {
                let server: &mut ServerConn = pooled;
                if server.rbuf.capacity() - server.rbuf.len() < READ_CHUNK {
                    server.rbuf.reserve(READ_CHUNK);
                }
                // Both reads are cancel-safe: bytes read stay in their buffers.
                tokio::select! {
                    r = server.stream.read_buf(&mut server.rbuf) => Event::Server(r),
                    r = self.client.read_buf(&mut self.cbuf), if read_client => Event::Client(r),
                    _ = self.stop.changed() => Event::Stop,
                    m = notify::next(&mut self.notify) => Event::Notification(m),
                }
            }
            None => tokio::select! {
                r = self.client.read_buf(&mut self.cbuf) => Event::Client(r),
                _ = self.stop.changed() => Event::Stop,
                m = notify::next(&mut self.notify) => Event::Notification(m),
            },
        }
    }

    /// `n` bytes came from the server: counts them, answers the client, and sends on requests held back for
    /// routing once the one before is answered.
    async fn on_server_read(&mut self, n: usize) -> Result<Option<End>, ClientError> {
        if let Some(s) = self.server.as_ref() {
            s.pool().stats.received(n);
            s.info.bytes_received.fetch_add(n as u64, Relaxed);
        }
        if let Some(reason) = self.on_server_bytes().await? {
            if !Box::pin(self.failover(&reason)).await? {
                return Err(self.server_lost(&reason));
            }
        }
        // Requests held back for routing go on once the previous one is answered.
        if !self.cbuf.is_empty()
            && (self.routing_sensitive() || self.held_back)
            && (self.server.is_none()
                || self.core.tracker.pending_units() == 0
                || self.core.tracker.in_copy())
        {
            return self.on_client_bytes().await;
        }
        Ok(None)
    }

    /// Whether consecutive requests may need different servers (read/write splitting or several shards).
    fn routing_sensitive(&self) -> bool {
        self.pool.routing.split || self.pool.shards.len() > 1
    }

    fn server_lost(&mut self, reason: &str) -> ClientError {
        if let Some(s) = self.server.as_mut() {
            s.broken = true;
            tracing::warn!(server = %s.address, "server connection lost: {reason}");
            s.pool().mark_unhealthy(self.pool.routing.ban_time);
            if s.address.role != crate::config::ServerRole::Primary {
                s.pool().ban(
                    self.pool.routing.ban_time,
                    &format!("broke mid-flight: {reason}"),
                );
            }
        }
        ClientError::ServerLost(reason.to_owned())
    }

    fn release(&mut self) {
        if !self.parked.is_empty() {
            tracing::warn!(pool = %self.pool.database, "a cross-shard transaction ended on one shard without COMMIT or ROLLBACK through Ocelot; its other shards are rolled back");
            self.parked.clear();
        }
        self.core.replay = None;
        self.core.keep_nothing();
        self.attached_want = None;
        if let Some(mut server) = self.server.take() {
            if self.core.mode == PoolMode::Session || !self.core.pins.is_empty() {
                server.state.dirty.discard_all = true;
                self.core.pins = Default::default();
            }
            drop(server);
            self.slot.detach();
            self.info.set_state(ClientState::Idle);
        }
    }

    async fn flush_out(&mut self) -> Result<(), ClientError> {
        if !self.core.out.is_empty() {
            self.client.write_all(&self.core.out).await?;
            self.core.out.clear();
        }
        Ok(())
    }

    /// Writes what is ready for the server: `sout` (when something was rewritten) followed by `cbuf[..fwd]`.
    async fn forward_client(&mut self, fwd: &mut usize) -> Result<(), ClientError> {
        let n = std::mem::take(fwd);
        if n == 0 && self.sout.is_empty() {
            return Ok(());
        }
        let Some(server) = self.server.as_mut() else {
            self.cbuf.advance(n);
            self.sout.clear();
            return Ok(());
        };
        self.core.sending(&self.sout, &self.cbuf[..n]);
        if let Some(replay) = self.core.replay.as_mut() {
            if self.sout.is_empty() {
                replay.extend_from_slice(&self.cbuf[..n]);
            } else {
                // Rewritten messages name statements of this server: not safe to send elsewhere.
                self.core.replay = None;
            }
        }
        let sent = n + self.sout.len();
        server.pool().stats.sent(sent);
        server.info.bytes_sent.fetch_add(sent as u64, Relaxed);
        let now = Instant::now();
        if self.request_started.is_none() {
            self.info
                .request_since
                .store(crate::stats::now_us(), Relaxed);
        }
        self.request_started.get_or_insert(now);
        self.xact_started.get_or_insert(now);
        let written = if self.sout.is_empty() {
            server.stream.write_all(&self.cbuf[..n]).await
        } else {
            self.sout.extend_from_slice(&self.cbuf[..n]);
            server.stream.write_all(&self.sout).await
        };
        self.sout.clear();
        self.cbuf.advance(n);
        if let Err(e) = written {
            return Err(self.server_lost(&e.to_string()));
        }
        Ok(())
    }
}

/// Why a stop signal ends the session now, if it does (a drain lets it finish its transaction).
fn stop_reason(s: Stop) -> Option<ClientError> {
    match s {
        Stop::Run | Stop::Drain => None,
        Stop::Kill => Some(ClientError::AdminShutdown),
        Stop::IdleTimeout => Some(ClientError::IdleTimeout),
        Stop::IdleInTransaction => Some(ClientError::IdleInTransactionTimeout),
    }
}

/// What the client loop does after [`Session::without_server`].
pub(super) enum Flow {
    /// A server is attached: forward the piece.
    Attached,
    /// The piece was handled: go on with the next one.
    Next,
    /// Wait for more bytes (or for the server) before going on.
    Wait,
    /// The client went away.
    Leave,
}

enum Event {
    Server(std::io::Result<usize>),
    Client(std::io::Result<usize>),
    Stop,
    Notification(Option<bytes::Bytes>),
}

mod bookkeeping;
mod catalog;
mod checkout;
mod client_bytes;
mod commands;
mod copy;
mod cross;
mod idle;
mod listen;
mod multi;
mod multi_end;
mod pgml_ext;
mod plugins;
mod route;
mod server_bytes;
mod timeouts;
