//! Where PgCat's plugins act on a session: each Query and Parse is logged (`query_logger`), answered from the
//! config when it is an intercepted query and no transaction is open (`intercept`), or refused when it touches a
//! listed table (`table_access`, SQLSTATE 42501). Inside a transaction a refusal is sent to the server as a
//! statement that fails the same way, so client and server agree the transaction is aborted.

use bytes::Buf;

use super::Session;
use crate::protocol::codes::{frontend, txn};
use crate::protocol::encode::{self, Severity};
use crate::protocol::frame::Piece;
use crate::proxy::error::ClientError;
use crate::proxy::machine::Discard;

/// What the plugins did with a message.
pub(super) enum PluginStep {
    /// Nothing: it goes on as usual.
    Pass,
    /// Answered or refused by Ocelot; the message was consumed.
    Served,
    /// Replaced by the message in `scratch` (a statement that fails on the server).
    Replaced,
}

const INSUFFICIENT_PRIVILEGE: &str = "42501";

impl Session {
    pub(super) async fn run_plugins(&mut self, piece: &Piece) -> Result<PluginStep, ClientError> {
        let (Some(plugins), Piece::Whole(h)) = (self.pool.plugins.clone(), piece) else {
            return Ok(PluginStep::Pass);
        };
        let body = &self.cbuf[5..h.total()];
        let (name, sql) = match h.code {
            frontend::QUERY => (None, body.strip_suffix(&[0]).unwrap_or(body)),
            frontend::PARSE => match crate::protocol::extended::parse(body) {
                Ok((name, rest)) => (
                    Some(name.to_owned()),
                    rest.split(|&b| b == 0).next().unwrap_or_default(),
                ),
                Err(_) => return Ok(PluginStep::Pass),
            },
            _ => return Ok(PluginStep::Pass),
        };
        let sql = String::from_utf8_lossy(sql).into_owned();
        if plugins.query_logger {
            tracing::info!(pool = %self.pool.database, user = %self.pool.user, "query: {sql}");
        }
        let idle = self.server.is_none();
        if name.is_none() && idle && plugins.intercepts() {
            let (user, db) = (self.pool.user.clone(), self.pool.database.clone());
            if plugins.intercept(&sql, &user, &db, &mut self.core.out) {
                encode::ready_for_query(&mut self.core.out, txn::IDLE);
                self.cbuf.advance(piece.len());
                self.flush_out().await?;
                return Ok(PluginStep::Served);
            }
        }
        let Some(table) = plugins
            .checks_tables()
            .then(|| plugins.denied_table(&sql))
            .flatten()
        else {
            return Ok(PluginStep::Pass);
        };
        let msg = format!("permission for table \"{table}\" denied");
        if idle {
            encode::error_response(
                &mut self.core.out,
                Severity::Error,
                INSUFFICIENT_PRIVILEGE,
                &msg,
                None,
            );
            self.cbuf.advance(piece.len());
            match name {
                None => encode::ready_for_query(&mut self.core.out, txn::IDLE),
                // The rest of the extended request is dropped up to its Sync, which is answered.
                Some(_) => self.core.discard = Discard::ToSyncAnswered,
            }
            self.flush_out().await?;
            return Ok(PluginStep::Served);
        }
        let failing = format!(
            "DO $ocelot_do$BEGIN RAISE EXCEPTION USING ERRCODE = '{INSUFFICIENT_PRIVILEGE}', MESSAGE = {}; END$ocelot_do$",
            crate::router::session_sql::quote_literal(&msg)
        );
        self.core.scratch.clear();
        match name {
            None => encode::query(&mut self.core.scratch, &failing),
            Some(n) => encode::parse(&mut self.core.scratch, &n, &failing),
        }
        Ok(PluginStep::Replaced)
    }
}
