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
pub struct CancelSlot {
    pub pid: i32,
    pub secret: i32,
    target: Mutex<Option<Arc<CancelTarget>>>,
}

impl CancelSlot {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<CancelTarget>>> {
        // A poisoned slot still holds a whole Option.
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn attach(&self, target: &Arc<CancelTarget>) {
        let old = self.slot().replace(target.clone());
        drop(old);
    }

    pub fn detach(&self) {
        let old = self.slot().take();
        drop(old);
    }

    fn current(&self) -> Option<Arc<CancelTarget>> {
        self.slot().clone()
    }
}

/// All logged-in clients' slots, by process id.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<i32, Arc<CancelSlot>>>,
}

/// Removes a client's slot when the client goes away.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.slot.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<CancelSlot>>> {
        // Insert/remove/lookup only: a poisoned map is still consistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a new client a unique process id and a random secret.
    pub fn register(self: &Arc<Self>) -> Registration {
        let mut rng = rand::rng();
        let secret = rng.random::<i32>();
        let mut slots = self.lock();
        let pid = loop {
            let pid = rng.random_range(1..i32::MAX);
            if !slots.contains_key(&pid) {
                break pid;
            }
        };
        let slot = Arc::new(CancelSlot {
            pid,
            secret,
            target: Mutex::new(None),
        });
        slots.insert(pid, slot.clone());
        Registration {
            registry: self.clone(),
            slot,
        }
    }

    /// The server to cancel for a client's key, if the key is valid and the client holds a server now.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<Arc<CancelTarget>> {
        let slot = self.lock().get(&pid).cloned()?;
        if !constant_time_eq_i32(slot.secret, secret) {
            return None;
        }
        slot.current()
    }
}

/// Sends a CancelRequest to a server, as PostgreSQL's own clients do: connect, send, wait for the close.
pub async fn send_cancel(target: &CancelTarget) -> std::io::Result<()> {
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
        let r = reg.register();
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
        assert!(reg.lookup(pid, secret.wrapping_add(1)).is_none());
        r.slot.detach();
        assert!(reg.lookup(pid, secret).is_none());
        drop(r);
        assert!(reg.lock().is_empty());
    }
}
