//! The machine driven with scripted server messages, no PostgreSQL.

use bytes::BytesMut;

use super::client::Shared;
use super::server::{Heard, Observer};
use super::Core;
use crate::config::PoolMode;
use crate::pool::client_params::ClientParams;
use crate::pool::prepared::Registry;
use crate::pool::state::ServerState;
use crate::protocol::codes::{backend, frontend, txn};
use crate::protocol::encode::{self, Severity};
use crate::protocol::extended;
use crate::protocol::frame::{Piece, Splitter};
use crate::proxy::statements::ClientAction;
use crate::router::pinning::Pins;

#[derive(Default)]
pub(super) struct Recorder {
    pub(super) errors: usize,
    ready: Vec<u8>,
    schema_changes: usize,
    notifications: usize,
}

impl Observer for Recorder {
    fn error(&mut self) {
        self.errors += 1;
    }
    fn ready(&mut self, status: u8) {
        self.ready.push(status);
    }
    fn schema_changed(&mut self) {
        self.schema_changes += 1;
    }
    fn notification(&mut self, body: &mut [u8]) {
        self.notifications += 1;
        body[..4].copy_from_slice(&7i32.to_be_bytes());
    }
}

/// A session, the server it holds and what the client sees.
pub(super) struct Rig {
    pub(super) core: Core,
    pub(super) server: ServerState,
    rbuf: BytesMut,
    pub(super) obs: Recorder,
    pub(super) client_saw: Vec<u8>,
}

impl Rig {
    fn new(mode: PoolMode) -> Self {
        Rig {
            core: Core::new(mode, ClientParams::default(), false),
            server: ServerState::default(),
            rbuf: BytesMut::new(),
            obs: Recorder::default(),
            client_saw: Vec::new(),
        }
    }

    /// The client's messages go through the machine; returns the bytes the server gets.
    pub(super) fn client_writes(&mut self, bytes: &[u8], registry: &Registry) -> Vec<u8> {
        let mut split = Splitter::new(u32::MAX);
        let mut sent = Vec::new();
        let mut at = 0;
        while let Some(piece) = split.next(&bytes[at..], |_| true).unwrap() {
            let Piece::Whole(h) = piece else {
                panic!("scripted messages are whole");
            };
            let shared = Shared { registry, cap: 100 };
            let msg = &bytes[at..at + h.total()];
            match self
                .core
                .client_message(msg, piece, &mut self.server, shared)
                .unwrap()
            {
                ClientAction::Forward => sent.extend_from_slice(msg),
                ClientAction::Replaced => sent.extend_from_slice(&self.core.scratch),
                ClientAction::Drop => {}
            }
            at += h.total();
        }
        sent
    }

    /// Another server, as transaction mode gives the client for its next transaction.
    fn next_server(&mut self) {
        self.server = ServerState::default();
        self.core.tracker = Default::default();
        if let Some(map) = self.core.stmts.as_mut() {
            map.attach();
        }
        if let Some(fx) = self.core.effects.as_mut() {
            fx.attach();
        }
    }

    fn client_sends(&mut self, codes: &[u8]) {
        for &c in codes {
            self.core.tracker.client_message(c);
        }
    }

    /// The server's bytes arrive; what the driver would write to the client is collected.
    pub(super) fn server_sends(&mut self, bytes: &[u8]) -> Heard {
        self.rbuf.extend_from_slice(bytes);
        let heard = self
            .core
            .on_server(&mut self.rbuf, &mut self.server, &mut self.obs)
            .expect("valid messages");
        if heard.failover.is_none() {
            self.client_saw.extend_from_slice(&self.core.out);
            self.core.out.clear();
            self.client_saw
                .extend_from_slice(&self.rbuf[..heard.forward]);
            self.core.forwarded(&mut self.rbuf, heard.forward);
        }
        heard
    }
}

pub(super) fn msgs(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    build(&mut b);
    b
}

fn answered(b: &mut BytesMut, tag: &str, status: u8) {
    encode::empty(b, backend::PARSE_COMPLETE);
    encode::empty(b, backend::BIND_COMPLETE);
    encode::command_complete(b, tag);
    encode::ready_for_query(b, status);
}

const PIPELINED: [u8; 4] = [
    frontend::PARSE,
    frontend::BIND,
    frontend::EXECUTE,
    frontend::SYNC,
];

#[test]
fn a_pipeline_with_an_error_in_the_middle_keeps_the_server_until_the_last_sync() {
    let mut rig = Rig::new(PoolMode::Transaction);
    for _ in 0..3 {
        rig.client_sends(&PIPELINED);
    }
    let first = msgs(|b| answered(b, "SELECT 1", txn::IDLE));
    let heard = rig.server_sends(&first);
    assert!(heard.ready && !heard.release, "two Syncs are still owed");
    let rest = msgs(|b| {
        encode::error_response(b, Severity::Error, "42P01", "no such table", None);
        encode::ready_for_query(b, txn::IDLE);
        answered(b, "SELECT 1", txn::IDLE);
    });
    let heard = rig.server_sends(&rest);
    assert!(heard.release);
    assert_eq!(rig.obs.errors, 1);
    assert_eq!(rig.obs.ready, vec![txn::IDLE; 3]);
    let mut all = first.to_vec();
    all.extend_from_slice(&rest);
    assert_eq!(
        rig.client_saw, all,
        "every byte reaches the client, in order"
    );
    assert!(rig.rbuf.is_empty());
}

#[test]
fn a_server_is_kept_inside_a_transaction_in_session_mode_and_while_pinned() {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_sends(&[frontend::QUERY]);
    let heard = rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "BEGIN");
        encode::ready_for_query(b, txn::IN_TRANSACTION);
    }));
    assert!(heard.ready && !heard.release, "in a transaction");
    assert_eq!(rig.server.txn_status, txn::IN_TRANSACTION);

    rig.core.pins.insert(Pins::TEMP_TABLE);
    rig.client_sends(&[frontend::QUERY]);
    let heard = rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "COMMIT");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(!heard.release, "a temporary table pins the server");
    rig.client_sends(&[frontend::QUERY]);
    let heard = rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "DISCARD TEMP");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(heard.release, "DISCARD TEMP unpins it");

    let mut session = Rig::new(PoolMode::Session);
    session.client_sends(&[frontend::QUERY]);
    let heard = session.server_sends(&msgs(|b| {
        encode::command_complete(b, "SELECT 1");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(
        heard.ready && !heard.release,
        "session mode keeps its server"
    );
}

#[test]
fn a_large_row_is_forwarded_in_pieces_as_it_arrives() {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_sends(&[frontend::QUERY]);
    let value = vec![b'x'; 1 << 20];
    let answer = msgs(|b| {
        encode::row_description_text(b, &["x"]);
        encode::data_row_raw(b, &[Some(value.clone())]);
        encode::command_complete(b, "SELECT 1");
        encode::ready_for_query(b, txn::IDLE);
    });
    let mut released = Vec::new();
    for chunk in answer.chunks(64 * 1024) {
        let heard = rig.server_sends(chunk);
        released.push(heard.release);
        assert!(
            rig.rbuf.len() < 64 * 1024,
            "nothing waits for the whole row"
        );
    }
    assert_eq!(released.iter().filter(|r| **r).count(), 1);
    assert_eq!(released.last(), Some(&true), "released only at the end");
    assert_eq!(rig.client_saw, answer.to_vec());
}

#[test]
fn a_ready_for_query_ocelot_owed_itself_is_cut_out() {
    let mut rig = Rig::new(PoolMode::Transaction);
    // A Bind whose Sync Ocelot injected, then the client's own Execute and Sync.
    rig.client_sends(&[
        frontend::BIND,
        frontend::SYNC,
        frontend::EXECUTE,
        frontend::SYNC,
    ]);
    rig.core.swallow_rfq = 1;
    let bind = msgs(|b| encode::empty(b, backend::BIND_COMPLETE));
    let executed = msgs(|b| {
        encode::command_complete(b, "SELECT 1");
        encode::ready_for_query(b, txn::IDLE);
    });
    let mut all = bind.clone();
    encode::ready_for_query(&mut all, txn::IDLE);
    all.extend_from_slice(&executed);
    let heard = rig.server_sends(&all);
    assert!(heard.release);
    assert_eq!(rig.core.swallow_rfq, 0);
    let mut expected = bind.to_vec();
    expected.extend_from_slice(&executed);
    assert_eq!(rig.client_saw, expected);
}

#[test]
fn a_replica_going_away_before_answering_moves_the_request() {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_sends(&[frontend::QUERY]);
    rig.core.replay = Some(BytesMut::from(&b"request"[..]));
    let shutdown = msgs(|b| {
        encode::error_response(b, Severity::Fatal, "57P01", "terminating connection", None)
    });
    let heard = rig.server_sends(&shutdown);
    let reason = heard.failover.expect("fails over");
    assert!(reason.contains("57P01"), "{reason}");
    assert!(rig.client_saw.is_empty(), "the client hears nothing of it");
    assert_eq!(rig.obs.errors, 0);

    // Once the client heard part of the answer, an error is the answer.
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_sends(&[frontend::QUERY]);
    rig.core.replay = Some(BytesMut::new());
    let heard = rig.server_sends(&msgs(|b| {
        encode::row_description_text(b, &["x"]);
        encode::error_response(b, Severity::Fatal, "57P01", "terminating connection", None);
    }));
    assert_eq!(heard.failover, None);
    assert!(rig.core.replay.is_none());
    assert_eq!(rig.obs.errors, 1);
}

#[test]
fn reported_parameters_and_command_tags_update_what_is_tracked() {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_sends(&[frontend::QUERY]);
    rig.server_sends(&msgs(|b| {
        encode::parameter_status(b, "TimeZone", "Asia/Tokyo");
        encode::command_complete(b, "SET");
        encode::command_complete(b, "ALTER TABLE");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert_eq!(rig.server.params.get("TimeZone"), Some("Asia/Tokyo"));
    assert_eq!(rig.core.params.tracked.get("timezone"), Some("Asia/Tokyo"));
    assert!(rig.server.dirty.reset_all);
    assert_eq!(rig.obs.schema_changes, 1);

    rig.client_sends(&[frontend::QUERY]);
    rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "DISCARD ALL");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(!rig.server.dirty.any());
}

#[test]
fn a_notification_names_its_sender_as_the_client_knows_it() {
    let mut rig = Rig::new(PoolMode::Session);
    let note = msgs(|b| {
        let mut body = BytesMut::new();
        body.extend_from_slice(&1234i32.to_be_bytes());
        body.extend_from_slice(b"chan\0payload\0");
        b.extend_from_slice(&[backend::NOTIFICATION_RESPONSE]);
        b.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        b.extend_from_slice(&body);
    });
    rig.server_sends(&note);
    assert_eq!(rig.obs.notifications, 1);
    assert_eq!(&rig.client_saw[5..9], &7i32.to_be_bytes());
}

#[test]
fn an_invalid_length_is_an_error_not_a_panic() {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.rbuf.extend_from_slice(b"Z\0\0\0\x02");
    assert!(rig
        .core
        .on_server(&mut rig.rbuf, &mut rig.server, &mut rig.obs)
        .is_err());
}

#[test]
fn a_plan_made_stale_behind_ocelots_back_is_dropped_from_the_server() {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.core = Core::new(PoolMode::Transaction, ClientParams::default(), true);
    rig.client_sends(&[frontend::BIND, frontend::EXECUTE, frontend::SYNC]);
    let mut stale = msgs(stale_plan);
    encode::ready_for_query(&mut stale, txn::IDLE);
    let heard = rig.server_sends(&stale);
    assert!(heard.release);
    assert_eq!(rig.client_saw, stale.to_vec(), "the client gets the error");
    assert!(
        rig.server.dirty.deallocate_all,
        "the server drops its statements at check-in"
    );
    assert_eq!(
        rig.obs.schema_changes, 1,
        "texts parsed from now on get new statements"
    );

    let mut other = Rig::new(PoolMode::Transaction);
    other.core = Core::new(PoolMode::Transaction, ClientParams::default(), true);
    other.client_sends(&[frontend::QUERY]);
    other.server_sends(&msgs(|b| {
        encode::error_response(b, Severity::Error, "0A000", "not supported", None);
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(
        !other.server.dirty.any(),
        "other 0A000 errors are just errors"
    );
}

/// PostgreSQL's error for a statement whose plan went stale.
pub(super) fn stale_plan(b: &mut BytesMut) {
    let mut body = BytesMut::new();
    for (field, value) in [
        (b'S', "ERROR"),
        (b'C', "0A000"),
        (b'M', "cached plan must not change result type"),
        (b'R', "RevalidateCachedQuery"),
    ] {
        body.extend_from_slice(&[field]);
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(&[0]);
    }
    body.extend_from_slice(&[0]);
    b.extend_from_slice(&[backend::ERROR_RESPONSE]);
    b.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    b.extend_from_slice(&body);
}

pub(super) fn parse(b: &mut BytesMut, name: &str, sql: &str) {
    let mut rest = sql.as_bytes().to_vec();
    rest.extend_from_slice(&[0, 0, 0]);
    extended::encode_parse(b, name, &rest);
}

pub(super) fn bind(b: &mut BytesMut, statement: &str) {
    extended::encode_bind(b, "", statement, &[0, 0, 0, 0, 0, 0]);
}

pub(super) fn execute_sync(b: &mut BytesMut) {
    b.extend_from_slice(&[frontend::EXECUTE, 0, 0, 0, 9, 0, 0, 0, 0, 0]);
    encode::empty(b, frontend::SYNC);
}

/// The message codes in `bytes`, and the first name in each Parse or Bind.
pub(super) fn names(bytes: &[u8]) -> Vec<(char, String)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let body = &rest[5..1 + len];
        let name = match rest[0] {
            frontend::PARSE => extended::parse(body).unwrap().0.to_owned(),
            frontend::BIND => extended::bind(body).unwrap().1.to_owned(),
            _ => String::new(),
        };
        out.push((rest[0] as char, name));
        rest = &rest[1 + len..];
    }
    out
}

pub(super) fn mapped_rig() -> Rig {
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.core = Core::new(PoolMode::Transaction, ClientParams::default(), true);
    rig
}

#[test]
fn a_named_statement_follows_its_client_to_the_next_server() {
    let registry = Registry::default();
    let mut rig = mapped_rig();
    let sent = rig.client_writes(
        &msgs(|b| {
            parse(b, "s1", "SELECT 1");
            bind(b, "s1");
            execute_sync(b);
        }),
        &registry,
    );
    let proxy_name = names(&sent)[0].1.clone();
    assert!(proxy_name.starts_with("ocelot_"), "{proxy_name}");
    assert_eq!(
        names(&sent),
        [
            ('P', proxy_name.clone()),
            ('B', proxy_name.clone()),
            ('E', "".into()),
            ('S', "".into())
        ]
    );
    let answer = msgs(|b| answered(b, "SELECT 1", txn::IDLE));
    assert!(rig.server_sends(&answer).release);
    assert_eq!(rig.client_saw, answer.to_vec());

    // The next transaction gets a server that never saw the statement: it is prepared there first, and the
    // client does not hear that ParseComplete.
    rig.next_server();
    rig.client_saw.clear();
    let sent = rig.client_writes(
        &msgs(|b| {
            bind(b, "s1");
            execute_sync(b);
        }),
        &registry,
    );
    assert_eq!(
        names(&sent),
        [
            ('P', proxy_name.clone()),
            ('B', proxy_name),
            ('E', "".into()),
            ('S', "".into())
        ]
    );
    assert!(rig.server_sends(&answer).release);
    assert_eq!(
        rig.client_saw,
        answer[5..].to_vec(),
        "all but the ParseComplete"
    );
}

#[test]
fn a_statement_whose_parse_failed_in_a_pipeline_is_forgotten() {
    let registry = Registry::default();
    let mut rig = mapped_rig();
    let sent = rig.client_writes(
        &msgs(|b| {
            parse(b, "good", "SELECT 1");
            encode::empty(b, frontend::SYNC);
            parse(b, "bad", "SELEC 1");
            bind(b, "bad");
            execute_sync(b);
            bind(b, "good");
            execute_sync(b);
        }),
        &registry,
    );
    assert_eq!(names(&sent).len(), 9);
    let heard = rig.server_sends(&msgs(|b| {
        encode::empty(b, backend::PARSE_COMPLETE);
        encode::ready_for_query(b, txn::IDLE);
        encode::error_response(b, Severity::Error, "42601", "syntax error", None);
        encode::ready_for_query(b, txn::IDLE);
        encode::empty(b, backend::BIND_COMPLETE);
        encode::command_complete(b, "SELECT 1");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(heard.release, "three Syncs, three answers");
    // "bad" no longer exists (the server's 26000 answers a Bind of it); "good" does, already on this server.
    let sent = rig.client_writes(
        &msgs(|b| {
            bind(b, "bad");
            bind(b, "good");
        }),
        &registry,
    );
    let good = names(&sent)[1].1.clone();
    assert_eq!(names(&sent), [('B', "bad".into()), ('B', good)]);
}

#[test]
fn a_set_rolled_back_with_its_transaction_is_not_carried_to_the_next_server() {
    let registry = Registry::default();
    let mut rig = Rig::new(PoolMode::Transaction);
    let query = |sql: &str| msgs(|b| encode::query(b, sql));
    rig.client_writes(&query("SET search_path TO kept"), &registry);
    rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "SET");
        encode::ready_for_query(b, txn::IDLE);
    }));
    rig.client_writes(
        &query("BEGIN; SET search_path TO lost; SELECT 1/0"),
        &registry,
    );
    rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "BEGIN");
        encode::command_complete(b, "SET");
        encode::error_response(b, Severity::Error, "22012", "division by zero", None);
        encode::ready_for_query(b, txn::FAILED);
    }));
    rig.client_writes(&query("ROLLBACK"), &registry);
    let heard = rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "ROLLBACK");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(heard.release);
    let sets: Vec<_> = rig.core.params.sets.iter().collect();
    assert_eq!(sets.len(), 1);
    assert!(sets[0].1.contains("kept"), "{sets:?}");
}

#[test]
fn session_state_a_tag_cannot_show_pins_the_server_or_marks_it_for_reset() {
    let registry = Registry::default();
    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_writes(
        &msgs(|b| encode::query(b, "CREATE TEMP TABLE t (a int)")),
        &registry,
    );
    let heard = rig.server_sends(&msgs(|b| {
        encode::command_complete(b, "CREATE TABLE");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(
        heard.ready && !heard.release,
        "a temporary table keeps its server"
    );

    let mut rig = Rig::new(PoolMode::Transaction);
    rig.client_writes(
        &msgs(|b| encode::query(b, "SELECT set_config('app.user', 'alice', false)")),
        &registry,
    );
    assert!(
        rig.server.dirty.reset_all,
        "the server is reset before anyone else gets it"
    );
}
