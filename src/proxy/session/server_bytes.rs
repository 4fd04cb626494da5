//! The server side of a session's loop: the machine's server half ([`crate::proxy::machine::server`]) reads what
//! the server sent; this writes it to the client in one write, feeds the statistics, and gives the server back
//! once the transaction is over.

use super::*;
use crate::pool::ServerPool;
use crate::proxy::machine::server::Observer;
use crate::shared::cancel::CancelRegistry;
use crate::stats::ConnInfo;

/// The session's bookkeeping outside the machine, as the machine's server half reports to it.
struct Books<'a> {
    client: &'a ClientInfo,
    pool: &'a ServerPool,
    conn: &'a ConnInfo,
    user_pool: &'a UserPool,
    cancel: &'a crate::pool::CancelTarget,
    client_pid: i32,
    cancels: &'a CancelRegistry,
    request_started: &'a mut Option<Instant>,
    xact_started: &'a mut Option<Instant>,
}

impl Observer for Books<'_> {
    fn error(&mut self) {
        self.pool.stats.error();
        self.client.error_count.fetch_add(1, Relaxed);
    }

    fn ready(&mut self, status: u8) {
        Session::count_request(
            self.client,
            self.pool,
            self.conn,
            self.request_started,
            self.xact_started,
            status,
        );
    }

    fn schema_changed(&mut self) {
        self.user_pool.statements.schema_changed();
    }

    fn notification(&mut self, body: &mut [u8]) {
        notify::sender_pid(body, self.cancel, self.client_pid, self.cancels);
    }
}

impl Session {
    /// Handles what the server sent: the machine reads it, and it goes to the client in one write; the server is
    /// given back when the transaction is over. Returns `Some(reason)` when a replica that has not answered yet
    /// reports it is shutting down: the caller then fails the request over to another server.
    pub(super) async fn on_server_bytes(&mut self) -> Result<Option<String>, ClientError> {
        let Some(pooled) = self.server.as_mut() else {
            return Ok(None);
        };
        let (spool, server) = pooled.split();
        let mut books = Books {
            client: &self.info,
            pool: spool,
            conn: &server.info,
            user_pool: &self.pool,
            cancel: &server.cancel,
            client_pid: self.slot.pid,
            cancels: &self.shared.cancels,
            request_started: &mut self.request_started,
            xact_started: &mut self.xact_started,
        };
        let heard = match self
            .core
            .on_server(&mut server.rbuf, &mut server.state, &mut books)
        {
            Ok(heard) => heard,
            Err(e) => {
                server.broken = true;
                return Err(ClientError::ServerLost(format!(
                    "invalid message from server: {e}"
                )));
            }
        };
        if heard.failover.is_some() {
            return Ok(heard.failover);
        }
        let out = &mut self.core.out;
        if out.is_empty() {
            self.client.write_all(&server.rbuf[..heard.forward]).await?;
        } else {
            out.extend_from_slice(&server.rbuf[..heard.forward]);
            self.client.write_all(out).await?;
            out.clear();
        }
        self.core.forwarded(&mut server.rbuf, heard.forward);
        if heard.resend {
            if let Err(e) = server.stream.write_all(self.core.resend()).await {
                return Err(self.server_lost(&e.to_string()));
            }
        }
        if heard.release {
            self.release();
        }
        Ok(None)
    }
}
