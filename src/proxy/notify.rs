//! The client side of LISTEN/NOTIFY in transaction mode. LISTEN, UNLISTEN and UNLISTEN * sent while the client
//! holds no server (by simple Query, or as an unnamed extended-protocol statement) are answered by Ocelot, which
//! subscribes the client on the pool's shared LISTEN connection. Notifications wait in the client's mailbox and
//! are written while it is between transactions, as PostgreSQL delivers them.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pool::listener::Mailbox;
use crate::router::session_sql::{classify, may_change_session, split_statements, SessionCommand};

/// A client's subscriptions and undelivered notifications.
#[derive(Debug)]
pub struct Notifications {
    pub mailbox: Mailbox,
    pub rx: mpsc::UnboundedReceiver<Bytes>,
    pub channels: HashSet<String>,
    /// Notifications that arrived while the client was inside a transaction.
    pub held: VecDeque<Bytes>,
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
pub fn listen_commands(sql: &[u8]) -> Option<Vec<SessionCommand>> {
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
pub async fn next(n: &mut Option<Notifications>) -> Option<Bytes> {
    match n {
        Some(n) => n.rx.recv().await,
        None => std::future::pending().await,
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
}
