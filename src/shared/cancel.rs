//! Query cancellation. Each client gets its own random BackendKeyData; while it holds a server, its slot points
//! at that server's key, so a CancelRequest (which arrives on a new connection) reaches exactly the server running
//! that client's query and nobody else's. The registry map changes only at login and logout; the per-query
//! update takes the client's own slot's lock, which only a CancelRequest for that client ever contends. (An
//! `ArcSwapOption` here cost more: each store pays the debts of every thread, about 1% of the proxy's CPU under
//! pgbench -S.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::CancelTarget;
use crate::protocol::auth::constant_time_eq_i32;
use crate::protocol::encode;

/// A client's cancel key and the server it currently uses.
#[derive(Debug)]
pub(crate) struct CancelSlot {
    pub(crate) pid: i32,
    pub(crate) secret: i32,
    /// Whether the client keeps its server for its whole session (session mode), so the server's process id
    /// stands for this client in what other sessions see (NOTIFY senders).
    exclusive: bool,
    target: Mutex<Option<Arc<CancelTarget>>>,
}

impl CancelSlot {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<CancelTarget>>> {
        // A poisoned slot still holds a whole Option.
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn attach(&self, target: &Arc<CancelTarget>) {
        let old = self.slot().replace(target.clone());
        drop(old);
    }

    pub(crate) fn detach(&self) {
        let old = self.slot().take();
        drop(old);
    }

    fn current(&self) -> Option<Arc<CancelTarget>> {
        self.slot().clone()
    }
}

/// All logged-in clients' slots, by process id. A session-mode client on a pool of one server is given that
/// server's own process id, which another such client of another PostgreSQL may share: a process id maps to the
/// few slots that carry it, told apart by their secrets.
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    slots: Mutex<HashMap<i32, Vec<Arc<CancelSlot>>>>,
}

/// Removes a client's slot when the client goes away.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<CancelRegistry>,
    pub(crate) slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slots = self.registry.lock();
        if let Some(list) = slots.get_mut(&self.slot.pid) {
            list.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if list.is_empty() {
                slots.remove(&self.slot.pid);
            }
        }
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Vec<Arc<CancelSlot>>>> {
        // Insert/remove/lookup only: a poisoned map is still consistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a new client a process id (`pid`, or a random unused one) and a random secret that no other holder
    /// of that id has; `exclusive` as in [`CancelSlot`].
    pub(crate) fn register(self: &Arc<Self>, pid: Option<i32>, exclusive: bool) -> Registration {
        let mut rng = rand::rng();
        let mut slots = self.lock();
        let pid = pid.unwrap_or_else(|| loop {
            let pid = rng.random_range(1..i32::MAX);
            if !slots.contains_key(&pid) {
                break pid;
            }
        });
        let list = slots.entry(pid).or_default();
        let secret = loop {
            let secret = rng.random::<i32>();
            if list.iter().all(|s| s.secret != secret) {
                break secret;
            }
        };
        let slot = Arc::new(CancelSlot {
            pid,
            secret,
            exclusive,
            target: Mutex::new(None),
        });
        list.push(slot.clone());
        Registration {
            registry: self.clone(),
            slot,
        }
    }

    /// The server to cancel for a client's key, if the key is valid and the client holds a server now.
    pub(crate) fn lookup(&self, pid: i32, secret: i32) -> Option<Arc<CancelTarget>> {
        let slot = self
            .lock()
            .get(&pid)?
            .iter()
            .find(|s| constant_time_eq_i32(s.secret, secret))
            .cloned()?;
        slot.current()
    }

    /// The process id Ocelot gave the session-mode client that holds server process `server_pid` at `host:port`,
    /// if one does. A scan of every client, run only for a NotificationResponse from another session: rare next
    /// to queries, and an index would cost a shared write on every transaction-mode checkout.
    pub(crate) fn client_of(&self, host: &str, port: u16, server_pid: i32) -> Option<i32> {
        self.lock()
            .values()
            .flatten()
            .filter(|s| s.exclusive)
            .find(|s| {
                s.current()
                    .is_some_and(|t| t.pid == server_pid && t.port == port && t.host == host)
            })
            .map(|s| s.pid)
    }
}

/// Sends a CancelRequest to a server, as PostgreSQL's own clients do: connect, send, wait for the close.
pub(crate) async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
    let mut s = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let mut b = BytesMut::with_capacity(16);
    encode::cancel_request(&mut b, target.pid, target.secret);
    s.write_all(&b).await?;
    let mut sink = [0u8; 16];
    let _ = s.read(&mut sink).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_the_right_secret_and_an_attached_server() {
        let reg = Arc::new(CancelRegistry::default());
        let r = reg.register(None, true);
        let (pid, secret) = (r.slot.pid, r.slot.secret);
        assert!(reg.lookup(pid, secret).is_none());
        let t = Arc::new(CancelTarget {
            host: "h".into(),
            port: 1,
            pid: 7,
            secret: 8,
        });
        r.slot.attach(&t);
        assert_eq!(reg.lookup(pid, secret).as_deref(), Some(&*t));
        assert_eq!(reg.client_of("h", 1, 7), Some(pid));
        assert_eq!(reg.client_of("h", 2, 7), None);
        let shared = reg.register(None, false);
        shared.slot.attach(&t);
        r.slot.detach();
        assert_eq!(
            reg.client_of("h", 1, 7),
            None,
            "a transaction-mode client's server is not its own"
        );
        shared.slot.detach();
        // A second holder of one process id is told apart by its secret.
        let twin = reg.register(Some(pid), true);
        assert_ne!(twin.slot.secret, secret);
        twin.slot.attach(&t);
        assert!(reg.lookup(pid, secret).is_none());
        assert_eq!(reg.lookup(pid, twin.slot.secret).as_deref(), Some(&*t));
        drop(twin);
        assert!(reg.lookup(pid, secret).is_none());
        assert!(reg.lookup(pid, secret.wrapping_add(1)).is_none());
        r.slot.detach();
        assert!(reg.lookup(pid, secret).is_none());
        drop((r, shared));
        assert!(reg.lock().is_empty());
    }
}
