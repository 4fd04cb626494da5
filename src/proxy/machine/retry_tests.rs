//! A request that meets a stale plan is sent again, re-prepared, and the client never sees the error.

use bytes::BytesMut;

use super::tests::{bind, execute_sync, mapped_rig, msgs, names, parse, stale_plan, Rig};
use crate::pool::prepared::Registry;
use crate::protocol::codes::{backend, frontend, txn};
use crate::protocol::encode;

const TEXT: &str = "SELECT * FROM t";

/// The client's request goes through the machine to the server, as the driver sends it.
fn send(rig: &mut Rig, registry: &Registry, request: &BytesMut) -> Vec<u8> {
    let sent = rig.client_writes(request, registry);
    rig.core.sending(&[], &sent);
    sent
}

/// A rig whose server prepared `TEXT` as the pool's statement in an earlier request, and the codes the client saw.
fn prepared_rig(registry: &Registry) -> Rig {
    let mut rig = mapped_rig();
    rig.core.keep_next_request(&rig.server);
    send(
        &mut rig,
        registry,
        &msgs(|b| {
            parse(b, "s1", TEXT);
            bind(b, "s1");
            execute_sync(b);
        }),
    );
    rig.server_sends(&msgs(|b| {
        encode::empty(b, backend::PARSE_COMPLETE);
        encode::empty(b, backend::BIND_COMPLETE);
        encode::command_complete(b, "SELECT 0");
        encode::ready_for_query(b, txn::IDLE);
    }));
    rig.client_saw.clear();
    rig
}

fn codes(bytes: &[u8]) -> String {
    names(bytes).into_iter().map(|(c, _)| c).collect()
}

#[test]
fn a_bind_that_meets_a_stale_plan_is_re_prepared_and_sent_again() {
    let registry = Registry::default();
    let mut rig = prepared_rig(&registry);
    let sent = send(
        &mut rig,
        &registry,
        &msgs(|b| {
            bind(b, "s1");
            describe(b, b'P', "");
            execute_sync(b);
        }),
    );
    let shared = names(&sent)[0].1.clone();
    let heard = rig.server_sends(&msgs(|b| {
        stale_plan(b);
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(heard.resend && !heard.ready && !heard.release);
    assert!(rig.client_saw.is_empty(), "the error is not shown");
    assert_eq!(
        names(rig.core.resend()),
        [
            ('C', String::new()),
            ('P', shared.clone()),
            ('B', shared),
            ('D', String::new()),
            ('E', String::new()),
            ('S', String::new())
        ]
    );
    let heard = rig.server_sends(&msgs(|b| {
        encode::empty(b, backend::CLOSE_COMPLETE);
        encode::empty(b, backend::PARSE_COMPLETE);
        encode::empty(b, backend::BIND_COMPLETE);
        encode::empty(b, backend::NO_DATA);
        encode::command_complete(b, "SELECT 0");
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(heard.ready && heard.release && !heard.resend);
    assert_eq!(
        codes(&rig.client_saw),
        "2nCZ",
        "one answer, as if nothing was stale"
    );
    assert_eq!(rig.obs.errors, 0);
    assert!(
        rig.server.dirty.deallocate_all,
        "the server's other statements go at check-in"
    );
}

#[test]
fn answers_already_forwarded_are_not_forwarded_twice() {
    let registry = Registry::default();
    let mut rig = prepared_rig(&registry);
    // A driver's prepare: ParseComplete and ParameterDescription reach the client before the Describe meets the
    // stale plan (PostgreSQL checks the plan when it comes to the row description).
    let sent = send(
        &mut rig,
        &registry,
        &msgs(|b| {
            parse(b, "s2", TEXT);
            describe(b, b'S', "s2");
            encode::empty(b, frontend::SYNC);
        }),
    );
    assert_eq!(codes(&sent), "PDS");
    rig.server_sends(&msgs(|b| {
        encode::empty(b, backend::PARSE_COMPLETE);
        parameter_description(b);
    }));
    let heard = rig.server_sends(&msgs(|b| {
        stale_plan(b);
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(heard.resend);
    assert_eq!(codes(rig.core.resend()), "CPPDS");
    rig.server_sends(&msgs(|b| {
        encode::empty(b, backend::CLOSE_COMPLETE);
        encode::empty(b, backend::PARSE_COMPLETE);
        encode::empty(b, backend::PARSE_COMPLETE);
        parameter_description(b);
        encode::empty(b, backend::NO_DATA);
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert_eq!(codes(&rig.client_saw), "1tnZ");
}

#[test]
fn a_request_is_not_sent_again_in_a_transaction_without_a_describe_or_behind_another() {
    let registry = Registry::default();
    // Inside a transaction the error has aborted it: the client must hear it.
    let mut rig = prepared_rig(&registry);
    rig.server.txn_status = txn::IN_TRANSACTION;
    rig.core.keep_next_request(&rig.server);
    send(
        &mut rig,
        &registry,
        &msgs(|b| {
            bind(b, "s1");
            execute_sync(b);
        }),
    );
    let heard = rig.server_sends(&msgs(|b| {
        stale_plan(b);
        encode::ready_for_query(b, txn::FAILED);
    }));
    assert!(!heard.resend);
    assert_eq!(codes(&rig.client_saw), "EZ");
    // A Bind without a Describe: the client reads the rows with the columns it was told of before the change.
    let mut rig = prepared_rig(&registry);
    send(
        &mut rig,
        &registry,
        &msgs(|b| {
            bind(b, "s1");
            execute_sync(b);
        }),
    );
    let heard = rig.server_sends(&msgs(|b| {
        stale_plan(b);
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(!heard.resend);
    assert_eq!(codes(&rig.client_saw), "EZ");
    // Two requests in flight: sending the first again would reorder them.
    let mut rig = prepared_rig(&registry);
    for _ in 0..2 {
        send(
            &mut rig,
            &registry,
            &msgs(|b| {
                bind(b, "s1");
                describe(b, b'P', "");
                execute_sync(b);
            }),
        );
    }
    let heard = rig.server_sends(&msgs(|b| {
        stale_plan(b);
        encode::ready_for_query(b, txn::IDLE);
    }));
    assert!(!heard.resend);
    assert_eq!(codes(&rig.client_saw), "EZ");
}

fn describe(b: &mut BytesMut, kind: u8, name: &str) {
    crate::protocol::extended::encode_target(b, frontend::DESCRIBE, kind, name);
}

fn parameter_description(b: &mut BytesMut) {
    b.extend_from_slice(&[backend::PARAMETER_DESCRIPTION, 0, 0, 0, 6, 0, 0]);
}
