//! The machine driven with scripted server messages, no PostgreSQL.

use bytes::BytesMut;

use super::server::{Heard, Observer};
use super::Core;
use crate::config::PoolMode;
use crate::pool::client_params::ClientParams;
use crate::pool::state::ServerState;
use crate::protocol::codes::{backend, frontend, txn};
use crate::protocol::encode::{self, Severity};
use crate::router::pinning::Pins;

#[derive(Default)]
struct Recorder {
    errors: usize,
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
struct Rig {
    core: Core,
    server: ServerState,
    rbuf: BytesMut,
    obs: Recorder,
    client_saw: Vec<u8>,
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

    fn client_sends(&mut self, codes: &[u8]) {
        for &c in codes {
            self.core.tracker.client_message(c);
        }
    }

    /// The server's bytes arrive; what the driver would write to the client is collected.
    fn server_sends(&mut self, bytes: &[u8]) -> Heard {
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

fn msgs(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
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
    let mut stale = BytesMut::new();
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
    stale.extend_from_slice(&[backend::ERROR_RESPONSE]);
    stale.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    stale.extend_from_slice(&body);
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
