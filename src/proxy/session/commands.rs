//! What a session answers itself before any server is involved: PgCat's routing commands (`SET SHARD TO`, `SET
//! SERVER ROLE TO`, `SHOW PRIMARY READS`, ...) and, in a sharded pool, a bare BEGIN whose shard is not known yet.

use bytes::{Buf, BytesMut};

use super::Session;
use crate::config::{DefaultRole, DefaultShard};
use crate::protocol::codes::{sqlstate, txn};
use crate::protocol::encode::{self, Severity};
use crate::proxy::error::ClientError;
use crate::router::commands::{self, RoleChoice, RoutingCommand};

impl Session {
    /// In a sharded pool, a transaction begun with a bare BEGIN has no shard yet: Ocelot answers the BEGIN and
    /// sends it to whichever shard the transaction's first statement needs. A COMMIT or ROLLBACK before any
    /// statement is answered too.
    pub(super) async fn try_deferred_begin(&mut self, total: usize) -> Result<bool, ClientError> {
        if self.pool.shards.len() <= 1 {
            return Ok(false);
        }
        let body = &self.cbuf[5..total];
        let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).to_string();
        let norm = text
            .trim()
            .trim_end_matches(';')
            .trim()
            .to_ascii_lowercase();
        let words: Vec<&str> = norm.split_whitespace().collect();
        let (tag, status) = match words.as_slice() {
            ["begin", ..] if self.pending_begin.is_none() => ("BEGIN", txn::IN_TRANSACTION),
            ["start", "transaction", ..] if self.pending_begin.is_none() => {
                ("START TRANSACTION", txn::IN_TRANSACTION)
            }
            ["commit" | "end", ..] if self.pending_begin.is_some() => ("COMMIT", txn::IDLE),
            ["rollback" | "abort", ..] if self.pending_begin.is_some() => ("ROLLBACK", txn::IDLE),
            _ => return Ok(false),
        };
        if text.contains(';') && text.trim().trim_end_matches(';').contains(';') {
            return Ok(false);
        }
        self.cbuf.advance(total);
        self.pending_begin = (status == txn::IN_TRANSACTION).then_some(text);
        encode::command_complete(&mut self.core.out, tag);
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(true)
    }

    /// Answers PgCat's routing commands sent as a simple Query while no server is held.
    pub(super) async fn try_routing_command(&mut self, total: usize) -> Result<bool, ClientError> {
        let body = &self.cbuf[5..total];
        let sql = std::str::from_utf8(body.strip_suffix(&[0]).unwrap_or(body)).unwrap_or_default();
        let Some(cmd) = commands::parse(sql) else {
            return Ok(false);
        };
        self.cbuf.advance(total);
        self.answer_routing_command(cmd);
        let status = self.status_without_server();
        encode::ready_for_query(&mut self.core.out, status);
        self.flush_out().await?;
        Ok(true)
    }

    /// Applies one routing command to the session and writes its answer (without ReadyForQuery).
    fn answer_routing_command(&mut self, cmd: RoutingCommand) {
        match cmd {
            RoutingCommand::SetServerRole(role) => {
                self.role_override = role;
                encode::command_complete(&mut self.core.out, "SET");
            }
            RoutingCommand::SetPrimaryReads(on) => {
                self.primary_reads_override = on;
                encode::command_complete(&mut self.core.out, "SET");
            }
            RoutingCommand::ShowServerRole => {
                let v = self.shown_role();
                show(&mut self.core.out, "server role", v);
            }
            RoutingCommand::ShowPrimaryReads => {
                let v = if self.primary_reads() { "on" } else { "off" };
                show(&mut self.core.out, "primary reads", v);
            }
            RoutingCommand::SetShard(n) => {
                if let Some(n) = n.filter(|&n| n >= self.pool.shards.len()) {
                    let msg = format!(
                        "shard {n} does not exist: pool \"{}\" has {} shard(s)",
                        self.pool.database,
                        self.pool.shards.len()
                    );
                    self.refuse_parameter(&msg);
                } else {
                    self.shard_override = Some(n);
                    encode::command_complete(&mut self.core.out, "SET");
                }
            }
            RoutingCommand::SetShardingKey(key) => match self.pool.sharder.shard_of_text(&key) {
                Some(n) => {
                    self.shard_override = Some(Some(n));
                    encode::command_complete(&mut self.core.out, "SET");
                }
                None => {
                    let msg = format!("invalid sharding key \"{key}\" for this pool's key type");
                    self.refuse_parameter(&msg);
                }
            },
            RoutingCommand::ShowShard => {
                let v = self.shown_shard();
                show(&mut self.core.out, "shard", &v);
            }
        }
    }

    fn refuse_parameter(&mut self, msg: &str) {
        let code = sqlstate::INVALID_PARAMETER_VALUE;
        encode::error_response(&mut self.core.out, Severity::Error, code, msg, None);
    }

    /// `SHOW SERVER ROLE`: the client's choice, else "auto" when reads and writes are split, else the pool's.
    fn shown_role(&self) -> &'static str {
        match self.role_override {
            Some(RoleChoice::Primary) => "primary",
            Some(RoleChoice::Replica) => "replica",
            Some(RoleChoice::Any) => "any",
            None if self.pool.routing.split => "auto",
            None => match self.pool.default_role {
                DefaultRole::Any => "any",
                DefaultRole::Primary => "primary",
                DefaultRole::Replica => "replica",
            },
        }
    }

    /// `SHOW SHARD`: the client's choice, else the pool's default shard.
    fn shown_shard(&self) -> String {
        match self.shard_override {
            Some(Some(n)) => n.to_string(),
            Some(None) => "any".into(),
            None => match self.pool.default_shard {
                DefaultShard::Shard(n) => n.to_string(),
                DefaultShard::Random => "random".into(),
                DefaultShard::RandomHealthy => "random_healthy".into(),
            },
        }
    }
}

fn show(out: &mut BytesMut, column: &str, value: &str) {
    encode::row_description_text(out, &[column]);
    encode::data_row_text(out, &[value]);
    encode::command_complete(out, "SHOW");
}
