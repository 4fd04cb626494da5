//! The client side of LISTEN/NOTIFY in transaction mode. LISTEN, UNLISTEN and UNLISTEN * sent while the client
//! holds no server (by simple Query, or as an unnamed extended-protocol statement) are answered by Ocelot, which
//! subscribes the client on the pool's shared LISTEN connection. Notifications wait in the client's mailbox and
//! are written while it is between transactions, as PostgreSQL delivers them.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pool::listener::Mailbox;
use crate::pool::CancelTarget;
use crate::router::session_sql::{classify, may_change_session, split_statements, SessionCommand};
use crate::shared::cancel::CancelRegistry;

/// A client's subscriptions and undelivered notifications.
#[derive(Debug)]
pub(crate) struct Notifications {
    pub(crate) mailbox: Mailbox,
    pub(crate) rx: mpsc::UnboundedReceiver<Bytes>,
    pub(crate) channels: HashSet<String>,
    /// Notifications that arrived while the client was inside a transaction.
    pub(crate) held: VecDeque<Bytes>,
}

impl Default for Notifications {
    fn default() -> Self {
        let (mailbox, rx) = mpsc::unbounded_channel();
        Notifications {
            mailbox,
            rx,
            channels: HashSet::new(),
            held: VecDeque::new(),
        }
    }
}

/// The statements of `sql` when every one of them is LISTEN, UNLISTEN or UNLISTEN *.
pub(crate) fn listen_commands(sql: &[u8]) -> Option<Vec<SessionCommand>> {
    if !may_change_session(sql) {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    let cmds: Vec<SessionCommand> = split_statements(text).into_iter().map(classify).collect();
    let all = !cmds.is_empty()
        && cmds.iter().all(|c| {
            matches!(
                c,
                SessionCommand::Listen { .. }
                    | SessionCommand::Unlisten { .. }
                    | SessionCommand::UnlistenAll
            )
        });
    all.then_some(cmds)
}

/// Waits for the next notification, or forever when the client listens on nothing.
pub(crate) async fn next(n: &mut Option<Notifications>) -> Option<Bytes> {
    match n {
        Some(n) => n.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Rewrites the sender of a NotificationResponse `body` that came through `server` to the process id Ocelot gave
/// the sending client at login, as drivers compare it with their own connection's (`notify.pid ==
/// conn.backend_pid`): `client_pid` when the sender is this session's own server, or the session-mode client that
/// holds the sending server. A sender that no client holds for good (transaction mode) keeps its server's id.
pub(crate) fn sender_pid(
    body: &mut [u8],
    server: &CancelTarget,
    client_pid: i32,
    cancels: &CancelRegistry,
) {
    let Some(pid) = body.get_mut(..4) else {
        return;
    };
    let sender = i32::from_be_bytes([pid[0], pid[1], pid[2], pid[3]]);
    let client = if sender == server.pid {
        Some(client_pid)
    } else {
        cancels.client_of(&server.host, server.port, sender)
    };
    if let Some(c) = client {
        pid.copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_listen_only_requests() {
        assert_eq!(
            listen_commands(b"LISTEN a; UNLISTEN b").map(|v| v.len()),
            Some(2)
        );
        assert!(listen_commands(b"LISTEN a; SELECT 1").is_none());
        assert!(listen_commands(b"SELECT 1").is_none());
        assert!(listen_commands(b"NOTIFY a").is_none());
    }

    #[test]
    fn notifications_carry_the_senders_client_pid() {
        let reg = std::sync::Arc::new(CancelRegistry::default());
        let target = |pid| CancelTarget {
            host: "h".into(),
            port: 5432,
            pid,
            secret: 0,
        };
        let other = reg.register(None, true);
        other.slot.attach(&std::sync::Arc::new(target(55)));
        let mut body = 77i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"chan\0payload\0");
        sender_pid(&mut body, &target(12), 99, &reg);
        assert_eq!(&body[..4], &77i32.to_be_bytes(), "a sender no client holds");
        sender_pid(&mut body, &target(77), 99, &reg);
        assert_eq!(
            &body[..4],
            &99i32.to_be_bytes(),
            "this session's own NOTIFY"
        );
        let mut body = 55i32.to_be_bytes().to_vec();
        sender_pid(&mut body, &target(12), 99, &reg);
        assert_eq!(
            &body[..4],
            &other.slot.pid.to_be_bytes(),
            "another session-mode client"
        );
        sender_pid(&mut [1, 2], &target(77), 99, &reg);
    }
}
