//! LISTEN/NOTIFY in transaction mode: one dedicated server connection per pool listens on every channel any
//! client listens on, and each notification is handed to every client listening on its channel, in arrival
//! order, without any client holding a pooled connection. The connection is opened on the first LISTEN and
//! re-opened (re-listening every channel) if it breaks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{PoolError, ServerConn, ServerPool};
use ocelot_protocol::codes::backend;
use ocelot_protocol::frame::Header;
use ocelot_protocol::{decode, encode};

/// A client's mailbox for NotificationResponse messages, as raw bytes ready to forward.
pub type Mailbox = mpsc::UnboundedSender<Bytes>;

enum Command {
    Listen(String, oneshot::Sender<Result<(), String>>),
    Unlisten(String),
}

/// The pool's listener: who listens on what, and the task that owns the LISTEN connection.
#[derive(Debug)]
pub struct Listener {
    server: Arc<ServerPool>,
    /// channel -> client id -> mailbox. Changed on LISTEN/UNLISTEN, read per notification.
    subscribers: Arc<Mutex<HashMap<String, HashMap<i32, Mailbox>>>>,
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Listener {
    pub fn new(server: Arc<ServerPool>) -> Self {
        Listener {
            server,
            subscribers: Arc::default(),
            commands: Mutex::new(None),
        }
    }

    fn subs(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<i32, Mailbox>>> {
        // Insert/remove/lookup only: a poisoned map is still consistent.
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sender(&self) -> mpsc::UnboundedSender<Command> {
        let mut guard = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run(self.server.clone(), self.subscribers.clone(), rx));
                *guard = Some(tx.clone());
                tx
            }
        }
    }

    /// Subscribes `client` to `channel`; returns once the server is listening on it.
    pub async fn listen(
        &self,
        client: i32,
        channel: &str,
        mailbox: &Mailbox,
    ) -> Result<(), String> {
        self.subs()
            .entry(channel.to_owned())
            .or_default()
            .insert(client, mailbox.clone());
        // The task is asked even when another client listens already: its reply then also means the server
        // was listening before this point, so no NOTIFY sent after the client's LISTEN completes is missed.
        let (tx, rx) = oneshot::channel();
        if self
            .sender()
            .send(Command::Listen(channel.to_owned(), tx))
            .is_err()
        {
            return Err("the LISTEN connection is not running".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the LISTEN connection stopped".into()))
    }

    /// Unsubscribes `client` from `channel`, or from every channel when `channel` is `None`.
    pub fn unlisten(&self, client: i32, channel: Option<&str>) {
        let mut emptied = Vec::new();
        {
            let mut subs = self.subs();
            subs.retain(|ch, clients| {
                if channel.is_none_or(|c| c == ch) {
                    clients.remove(&client);
                }
                if clients.is_empty() {
                    emptied.push(ch.clone());
                    false
                } else {
                    true
                }
            });
        }
        if emptied.is_empty() {
            return;
        }
        let tx = self.sender();
        for ch in emptied {
            let _ = tx.send(Command::Unlisten(ch));
        }
    }
}

/// The task owning the LISTEN connection. It ends when the listener is dropped (the command channel closes).
async fn run(
    server: Arc<ServerPool>,
    subscribers: Arc<Mutex<HashMap<String, HashMap<i32, Mailbox>>>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut listening: HashSet<String> = HashSet::new();
    let mut conn: Option<ServerConn> = None;
    loop {
        if conn.is_none() {
            conn = reconnect(&server, &listening, &subscribers).await;
            if conn.is_none() {
                // Answer waiting LISTENs with the failure rather than leaving clients hanging.
                match tokio::time::timeout(Duration::from_millis(500), commands.recv()).await {
                    Ok(Some(Command::Listen(_, reply))) => {
                        let _ = reply.send(Err("cannot open the LISTEN connection".into()));
                    }
                    Ok(None) => return,
                    _ => {}
                }
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let cap = c.rbuf.capacity() - c.rbuf.len();
        if cap < 4096 {
            c.rbuf.reserve(8192);
        }
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                let (sql, reply, channel, add) = match cmd {
                    Command::Listen(ch, reply) => (format!("LISTEN {}", quote_ident(&ch)), Some(reply), ch, true),
                    Command::Unlisten(ch) => {
                        // Someone may have subscribed again meanwhile.
                        let still = subscribers.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&ch);
                        if still || !listening.contains(&ch) {
                            continue;
                        }
                        (format!("UNLISTEN {}", quote_ident(&ch)), None, ch, false)
                    }
                };
                let result = if add && listening.contains(&channel) {
                    Ok(())
                } else {
                    query(c, &sql, &subscribers).await
                };
                match &result {
                    Ok(()) if add => { listening.insert(channel); }
                    Ok(()) => { listening.remove(&channel); }
                    Err(PoolError::Query { .. }) => {}
                    Err(e) => {
                        tracing::warn!(server = %server.address, "LISTEN connection lost: {e}");
                        conn = None;
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
            }
            r = c.stream.read_buf(&mut c.rbuf) => {
                match r {
                    Ok(n) if n > 0 => {
                        if let Err(e) = dispatch(c, &subscribers) {
                            tracing::warn!(server = %server.address, "LISTEN connection: {e}");
                            conn = None;
                        }
                    }
                    _ => {
                        tracing::warn!(server = %server.address, "LISTEN connection closed; reconnecting");
                        conn = None;
                    }
                }
            }
        }
    }
}

/// Opens the LISTEN connection and listens again on every channel the pool's clients listen on.
async fn reconnect(
    server: &ServerPool,
    listening: &HashSet<String>,
    subscribers: &Mutex<HashMap<String, HashMap<i32, Mailbox>>>,
) -> Option<ServerConn> {
    let mut c = match server.connect_dedicated().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(server = %server.address, "LISTEN connection failed: {e}");
            return None;
        }
    };
    for ch in listening {
        if let Err(e) = query(&mut c, &format!("LISTEN {}", quote_ident(ch)), subscribers).await {
            tracing::warn!(server = %server.address, "re-LISTEN failed: {e}");
            return None;
        }
    }
    Some(c)
}

/// Hands every whole NotificationResponse in the buffer to its channel's subscribers; other messages (notices,
/// parameter changes) are dropped.
fn dispatch(
    c: &mut ServerConn,
    subscribers: &Mutex<HashMap<String, HashMap<i32, Mailbox>>>,
) -> Result<(), PoolError> {
    loop {
        let h = match Header::parse(&c.rbuf, c.max_message()) {
            Ok(Some(h)) if c.rbuf.len() >= h.total() => h,
            Ok(_) => return Ok(()),
            Err(source) => {
                return Err(PoolError::Protocol {
                    server: c.address.to_string(),
                    source,
                })
            }
        };
        let msg = c.rbuf.split_to(h.total()).freeze();
        if h.code == backend::NOTIFICATION_RESPONSE {
            deliver(msg, subscribers);
        }
    }
}

/// Sends one NotificationResponse (whole, header included) to every subscriber of its channel.
fn deliver(msg: Bytes, subscribers: &Mutex<HashMap<String, HashMap<i32, Mailbox>>>) {
    let mut cur = decode::Cursor::new(
        backend::NOTIFICATION_RESPONSE,
        msg.get(5..).unwrap_or_default(),
    );
    let channel = cur
        .i32()
        .and_then(|_| cur.cstr("channel"))
        .unwrap_or_default();
    let subs = subscribers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(clients) = subs.get(channel) {
        for mailbox in clients.values() {
            let _ = mailbox.send(msg.clone());
        }
    }
}

/// Runs one statement on the LISTEN connection, dispatching notifications that arrive meanwhile.
async fn query(
    c: &mut ServerConn,
    sql: &str,
    subscribers: &Mutex<HashMap<String, HashMap<i32, Mailbox>>>,
) -> Result<(), PoolError> {
    // Notifications already buffered go out first, in order.
    dispatch(c, subscribers)?;
    let mut out = BytesMut::new();
    encode::query(&mut out, sql);
    let lost = |e: String, c: &ServerConn| PoolError::Lost {
        server: c.address.to_string(),
        reason: e,
    };
    c.stream
        .write_all(&out)
        .await
        .map_err(|e| lost(e.to_string(), c))?;
    let mut error = None;
    loop {
        let h = match Header::parse(&c.rbuf, c.max_message()) {
            Ok(Some(h)) if c.rbuf.len() >= h.total() => h,
            Ok(_) => {
                if c.stream
                    .read_buf(&mut c.rbuf)
                    .await
                    .map_err(|e| lost(e.to_string(), c))?
                    == 0
                {
                    return Err(lost("server closed the connection".into(), c));
                }
                continue;
            }
            Err(source) => {
                return Err(PoolError::Protocol {
                    server: c.address.to_string(),
                    source,
                })
            }
        };
        match h.code {
            backend::NOTIFICATION_RESPONSE => {
                deliver(c.rbuf.split_to(h.total()).freeze(), subscribers)
            }
            backend::ERROR_RESPONSE => {
                let msg = c.rbuf.split_to(h.total());
                error = Some(decode::error_fields(&msg[5..]).unwrap_or_default());
            }
            backend::READY_FOR_QUERY => {
                c.rbuf.advance(h.total());
                return match error {
                    Some(fields) => Err(PoolError::Query {
                        server: c.address.to_string(),
                        fields: Box::new(fields),
                    }),
                    None => Ok(()),
                };
            }
            _ => {
                c.rbuf.advance(h.total());
            }
        }
    }
}
