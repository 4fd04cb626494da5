//! The part of a session that Ocelot answers itself: LISTEN/UNLISTEN while no server is held, and delivery of
//! notifications from the pool's shared LISTEN connection.

use bytes::Buf;
use tokio::io::AsyncWriteExt;

use super::Session;
use crate::protocol::codes::{backend, frontend, sqlstate};
use crate::protocol::encode::{self, Severity};
use crate::protocol::extended;
use crate::protocol::frame::Piece;
use crate::proxy::error::ClientError;
use crate::proxy::machine::Discard;
use crate::proxy::notify::{listen_commands, Notifications};
use crate::router::session_sql::SessionCommand;

impl Session {
    /// Answers a whole client message without a server when it is (part of) a LISTEN or UNLISTEN request.
    /// Returns whether the message was consumed. Transaction mode only.
    pub(super) async fn try_local(&mut self, piece: &Piece) -> Result<bool, ClientError> {
        let Piece::Whole(h) = *piece else {
            return Ok(false);
        };
        if self.core.discard == Discard::ToSyncAnswered {
            return Ok(false);
        }
        if self.core.effects.is_none() {
            // Session mode: only PgCat's routing commands are answered here.
            return match h.code {
                frontend::QUERY => self.try_routing_command(h.total()).await,
                _ => Ok(false),
            };
        }
        let total = h.total();
        if let Some(cmd) = self.local_ext.take() {
            return self.continue_local_extended(h.code, total, cmd).await;
        }
        let body = &self.cbuf[5..total];
        match h.code {
            frontend::QUERY => {
                if self.try_routing_command(total).await? || self.try_deferred_begin(total).await? {
                    return Ok(true);
                }
                let body = &self.cbuf[5..total];
                let sql = body.strip_suffix(&[0]).unwrap_or(body);
                let Some(cmds) = listen_commands(sql) else {
                    return Ok(false);
                };
                self.cbuf.advance(total);
                for cmd in cmds {
                    if !self.run_listen(cmd).await {
                        break;
                    }
                }
                let status = self.status_without_server();
                encode::ready_for_query(&mut self.core.out, status);
                self.flush_out().await?;
                Ok(true)
            }
            frontend::PARSE => {
                let Ok((name, rest)) = extended::parse(body) else {
                    return Ok(false);
                };
                let sql = rest.split(|&b| b == 0).next().unwrap_or_default();
                let cmds = match listen_commands(sql) {
                    Some(c) if name.is_empty() && c.len() == 1 => c,
                    _ => return Ok(false),
                };
                self.cbuf.advance(total);
                encode::empty(&mut self.core.out, backend::PARSE_COMPLETE);
                self.local_ext = cmds.into_iter().next();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The rest of an extended-protocol LISTEN that [`Session::try_local`] took at its Parse: Ocelot answers
    /// the Bind, Describe, Close, Execute, Flush and Sync that follow it.
    async fn continue_local_extended(
        &mut self,
        code: u8,
        total: usize,
        cmd: SessionCommand,
    ) -> Result<bool, ClientError> {
        let body = &self.cbuf[5..total];
        match code {
            frontend::BIND => encode::empty(&mut self.core.out, backend::BIND_COMPLETE),
            frontend::DESCRIBE => {
                if body.first() == Some(&b'S') {
                    encode::no_parameters(&mut self.core.out);
                }
                encode::empty(&mut self.core.out, backend::NO_DATA);
            }
            frontend::CLOSE => encode::empty(&mut self.core.out, backend::CLOSE_COMPLETE),
            frontend::EXECUTE => {
                self.cbuf.advance(total);
                if !self.run_listen(cmd.clone()).await {
                    self.core.discard = Discard::ToSyncAnswered;
                    self.flush_out().await?;
                    return Ok(true);
                }
                self.local_ext = Some(cmd);
                return Ok(true);
            }
            frontend::FLUSH => {
                self.cbuf.advance(total);
                self.local_ext = Some(cmd);
                self.flush_out().await?;
                return Ok(true);
            }
            frontend::SYNC => {
                self.cbuf.advance(total);
                let status = self.status_without_server();
                encode::ready_for_query(&mut self.core.out, status);
                self.flush_out().await?;
                return Ok(true);
            }
            _ => return Ok(false),
        }
        self.cbuf.advance(total);
        self.local_ext = Some(cmd);
        Ok(true)
    }

    /// Runs one LISTEN/UNLISTEN for this client, appending its CommandComplete (or error) to `out`. Returns
    /// false on error.
    async fn run_listen(&mut self, cmd: SessionCommand) -> bool {
        let pid = self.slot.pid;
        let n = self.notify.get_or_insert_with(Notifications::default);
        let listener = self.pool.listener();
        match cmd {
            SessionCommand::Listen { channel } => {
                match listener.listen(pid, &channel, &n.mailbox).await {
                    Ok(()) => {
                        n.channels.insert(channel);
                        encode::command_complete(&mut self.core.out, "LISTEN");
                    }
                    Err(e) => {
                        listener.unlisten(pid, Some(&channel));
                        encode::error_response(
                            &mut self.core.out,
                            Severity::Error,
                            sqlstate::CONNECTION_FAILURE,
                            &format!("LISTEN {channel} failed: {e}"),
                            None,
                        );
                        return false;
                    }
                }
            }
            SessionCommand::Unlisten { channel } => {
                listener.unlisten(pid, Some(&channel));
                n.channels.remove(&channel);
                encode::command_complete(&mut self.core.out, "UNLISTEN");
            }
            SessionCommand::UnlistenAll => {
                listener.unlisten(pid, None);
                n.channels.clear();
                encode::command_complete(&mut self.core.out, "UNLISTEN");
            }
            _ => {}
        }
        true
    }

    /// Writes notifications held while the client was inside a transaction.
    pub(super) async fn flush_notifications(&mut self) -> Result<(), ClientError> {
        let Some(n) = self.notify.as_mut() else {
            return Ok(());
        };
        while let Some(msg) = n.held.pop_front() {
            self.client.write_all(&msg).await?;
        }
        Ok(())
    }

    /// Delivers a notification now, or holds it until the client's transaction ends.
    pub(super) async fn notification(&mut self, msg: bytes::Bytes) -> Result<(), ClientError> {
        if self.server.is_some() {
            if let Some(n) = self.notify.as_mut() {
                n.held.push_back(msg);
            }
            return Ok(());
        }
        self.client.write_all(&msg).await?;
        Ok(())
    }

    /// Unsubscribes from everything when the client leaves.
    pub(super) fn stop_listening(&mut self) {
        if let Some(n) = self.notify.take() {
            if !n.channels.is_empty() {
                self.pool.listener().unlisten(self.slot.pid, None);
            }
        }
    }
}
