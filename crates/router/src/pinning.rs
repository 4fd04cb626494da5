//! Session state that transaction mode cannot share: a session advisory lock, a temporary table or a `WITH HOLD`
//! cursor lives on one server past the end of the transaction that made it, so a client that makes one is pinned
//! to its server (as RDS Proxy does) until the state is gone or the client leaves, and is never handed to anyone
//! else. The scan is a single pass over the words of a statement; a false positive only costs pooling, so words in
//! strings and comments are not told apart.

/// What a client holds on its server, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pins(u8);

impl Pins {
    pub(crate) const ADVISORY_LOCK: Pins = Pins(1);
    pub const TEMP_TABLE: Pins = Pins(2);
    pub(crate) const HOLD_CURSOR: Pins = Pins(4);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn contains(self, other: Pins) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Pins) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Pins) {
        self.0 &= !other.0;
    }

    /// Names of the state held, for logs and `SHOW CLIENTS`.
    pub fn describe(self) -> String {
        let mut parts = Vec::new();
        for (bit, name) in [
            (Pins::ADVISORY_LOCK, "advisory lock"),
            (Pins::TEMP_TABLE, "temporary table"),
            (Pins::HOLD_CURSOR, "WITH HOLD cursor"),
        ] {
            if self.contains(bit) {
                parts.push(name);
            }
        }
        parts.join(", ")
    }

    /// Drops what a CommandComplete tag says is gone from the server.
    pub fn observe_tag(&mut self, tag: &[u8]) {
        match tag {
            b"DISCARD ALL" => *self = Pins::default(),
            b"DISCARD TEMP" => self.remove(Pins::TEMP_TABLE),
            b"CLOSE CURSOR ALL" => self.remove(Pins::HOLD_CURSOR),
            _ => {}
        }
    }
}

/// What a statement text adds to and removes from the pins.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PinChange {
    pub add: Pins,
    pub remove: Pins,
}

/// Scans one Query or Parse text.
pub fn scan(sql: &[u8]) -> PinChange {
    let mut change = PinChange::default();
    let (mut create_or_into, mut declare, mut prev_with) = (false, false, false);
    for word in words(sql) {
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        if is(b"pg_advisory_lock")
            || is(b"pg_advisory_lock_shared")
            || is(b"pg_try_advisory_lock")
            || is(b"pg_try_advisory_lock_shared")
        {
            change.add.insert(Pins::ADVISORY_LOCK);
        } else if is(b"pg_advisory_unlock_all") {
            change.remove.insert(Pins::ADVISORY_LOCK);
        } else if is(b"create") || is(b"into") {
            create_or_into = true;
        } else if (is(b"temp") || is(b"temporary")) && create_or_into {
            change.add.insert(Pins::TEMP_TABLE);
        } else if is(b"declare") {
            declare = true;
        } else if is(b"hold") && prev_with && declare {
            change.add.insert(Pins::HOLD_CURSOR);
        }
        prev_with = is(b"with");
    }
    change
}

/// The identifier-like words of `sql`: runs of ASCII letters, digits, `_` and non-ASCII bytes.
fn words(sql: &[u8]) -> impl Iterator<Item = &[u8]> {
    sql.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b >= 0x80))
        .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_is_found_and_transaction_scoped_state_is_not() {
        assert_eq!(
            scan(b"SELECT pg_advisory_lock(42)").add,
            Pins::ADVISORY_LOCK
        );
        assert_eq!(
            scan(b"select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)").add,
            Pins::ADVISORY_LOCK
        );
        assert!(scan(b"SELECT pg_advisory_xact_lock(42)").add.is_empty());
        assert!(scan(b"SELECT pg_advisory_unlock(42)").add.is_empty());
        assert_eq!(
            scan(b"SELECT pg_advisory_unlock_all()").remove,
            Pins::ADVISORY_LOCK
        );
        assert_eq!(scan(b"CREATE TEMP TABLE t (id int)").add, Pins::TEMP_TABLE);
        assert_eq!(
            scan(b"create local temporary table t as select 1").add,
            Pins::TEMP_TABLE
        );
        assert_eq!(scan(b"SELECT 1 INTO TEMP t").add, Pins::TEMP_TABLE);
        assert!(scan(b"SELECT temp FROM weather").add.is_empty());
        assert_eq!(
            scan(b"DECLARE c CURSOR WITH HOLD FOR SELECT 1").add,
            Pins::HOLD_CURSOR
        );
        assert!(scan(b"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1")
            .add
            .is_empty());
        assert!(
            scan(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1")
                .add
                .is_empty()
        );
    }

    #[test]
    fn tags_release_what_they_drop() {
        let mut p = Pins::default();
        p.insert(Pins::TEMP_TABLE);
        p.insert(Pins::HOLD_CURSOR);
        assert_eq!(p.describe(), "temporary table, WITH HOLD cursor");
        p.observe_tag(b"DISCARD TEMP");
        assert_eq!(p, Pins::HOLD_CURSOR);
        p.observe_tag(b"CLOSE CURSOR ALL");
        assert!(p.is_empty());
        p.insert(Pins::ADVISORY_LOCK);
        p.observe_tag(b"DISCARD ALL");
        assert!(p.is_empty());
    }
}
