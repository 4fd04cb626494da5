//! The client half of the session machine, for a message on its way to the held server: it is counted as owed an
//! answer, the session commands it carries are noted (for replay on the next server in transaction mode), state
//! that pins the client to its server is followed, and named prepared statements are mapped onto the pool's
//! shared ones. What the driver does with the message is the answer: forward its bytes, send the replacement left
//! in [`Core::scratch`], or drop it.

use super::{Core, Discard};
use crate::pool::prepared::Registry;
use crate::pool::state::ServerState;
use crate::protocol::codes::frontend;
use crate::protocol::extended;
use crate::protocol::frame::Piece;
use crate::protocol::ProtocolError;
use crate::proxy::statements::ClientAction;
use crate::router::pinning;
use crate::router::session_sql::mentions_set_config;

/// Where the client's statements map to: the pool's shared statements and how many a server keeps.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) cap: usize,
}

impl Core {
    /// Takes one piece of a client message bound for the held server; `at` is the client's buffer from the
    /// piece's start (holding the whole message when the piece is whole).
    pub(crate) fn client_message(
        &mut self,
        at: &[u8],
        piece: Piece,
        server: &mut ServerState,
        shared: Shared<'_>,
    ) -> Result<ClientAction, ProtocolError> {
        if !piece.starts_message() {
            return Ok(if self.discard == Discard::RestOfMessage {
                ClientAction::Drop
            } else {
                ClientAction::Forward
            });
        }
        if self.discard == Discard::RestOfMessage {
            self.discard = Discard::Nothing;
        }
        let code = piece.code();
        self.tracker.client_message(code);
        if code == frontend::EXECUTE {
            self.unsynced_execute = true;
        }
        self.track_effects(at, piece, Some(server));
        let action = self.map_statement(at, piece, server, shared)?;
        if action == ClientAction::Drop {
            // The rest of a streamed message goes the same way.
            if !matches!(piece, Piece::Whole(_)) {
                self.discard = Discard::RestOfMessage;
            }
        }
        Ok(action)
    }

    /// Notes the session commands and pins of a client message (`at` from its start). Malformed bodies are left
    /// for the server to reject.
    pub(crate) fn track_effects(
        &mut self,
        at: &[u8],
        piece: Piece,
        server: Option<&mut ServerState>,
    ) {
        let (Some(fx), Piece::Whole(h)) = (self.effects.as_mut(), piece) else {
            if let (Some(fx), frontend::SYNC) = (self.effects.as_mut(), piece.code()) {
                fx.sync();
            }
            return;
        };
        let body = &at[5..h.total()];
        if matches!(h.code, frontend::QUERY | frontend::PARSE) {
            // A set_config that is not recognised as a plain session SET could still change a setting: the
            // server is reset before anyone else gets it.
            if let (true, Some(server)) = (mentions_set_config(body), server) {
                server.dirty.reset_all = true;
            }
            let sql = match h.code {
                frontend::PARSE => extended::parse(body)
                    .map(|(_, rest)| rest.split(|&b| b == 0).next().unwrap_or_default())
                    .unwrap_or_default(),
                _ => body,
            };
            let change = pinning::scan(sql);
            let before = self.pins;
            self.pins.remove(change.remove);
            self.pins.insert(change.add);
            if self.pins != before {
                tracing::debug!(held = %self.pins.describe(), "transaction-mode client pinned to its server while it holds session state");
            }
        }
        match h.code {
            frontend::QUERY => fx.query(body.strip_suffix(&[0]).unwrap_or(body)),
            frontend::SYNC => fx.sync(),
            frontend::PARSE => {
                if let Ok((name, rest)) = extended::parse(body) {
                    let sql = rest.split(|&b| b == 0).next().unwrap_or_default();
                    fx.parse(name, sql);
                }
            }
            frontend::BIND => {
                if let Ok((portal, statement, rest)) = extended::bind(body) {
                    let params = extended::bind_params(rest).ok();
                    fx.bind(portal, statement, params.as_deref());
                }
            }
            frontend::EXECUTE => {
                let portal = body.split(|&b| b == 0).next().unwrap_or_default();
                fx.execute(std::str::from_utf8(portal).unwrap_or("\u{0}"));
            }
            _ => {}
        }
    }

    /// Runs the start of a client message through the prepared statement map, if the pool maps them; a
    /// replacement is left in `scratch`.
    fn map_statement(
        &mut self,
        at: &[u8],
        piece: Piece,
        server: &mut ServerState,
        shared: Shared<'_>,
    ) -> Result<ClientAction, ProtocolError> {
        let Some(map) = self.stmts.as_mut() else {
            return Ok(ClientAction::Forward);
        };
        let body = match piece {
            Piece::Whole(h) => &at[5..h.total()],
            Piece::Part { .. } => &[][..],
        };
        self.scratch.clear();
        map.client_message(
            piece.code(),
            body,
            &mut server.statements,
            shared.registry,
            shared.cap,
            &mut self.scratch,
        )
    }
}
