//! A small pre-parser for the statements that change session state (SET, RESET, set_config, PREPARE,
//! DEALLOCATE, DISCARD, LISTEN, UNLISTEN), so transaction mode can carry that state from server to server. It
//! splits a query string into statements with the router's lexer ([`super::lex`]) and classifies each by
//! its leading keywords; anything else is `Other`. A quick keyword scan keeps ordinary queries off the slow path.

use super::lex::{tokens, Kind};

/// What one statement does to session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET [SESSION] name ...` (also `SET TIME ZONE`): `statement` replays it.
    Set {
        name: String,
        statement: String,
    },
    /// `SET LOCAL ...`: ends with the transaction, nothing to carry.
    SetLocal,
    Reset {
        name: String,
    },
    ResetAll,
    /// `PREPARE name ...`: `statement` replays it.
    Prepare {
        name: String,
        statement: String,
    },
    Deallocate {
        name: String,
    },
    DeallocateAll,
    DiscardAll,
    /// `SELECT set_config(a, b, false)` where an argument is a Bind parameter: resolved when the values are known.
    SetConfig {
        name: ConfigArg,
        value: ConfigArg,
    },
    Listen {
        channel: String,
    },
    Unlisten {
        channel: String,
    },
    UnlistenAll,
    Other,
}

/// An argument of set_config: a string literal or a Bind parameter (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigArg {
    Literal(String),
    Param(usize),
}

impl ConfigArg {
    fn resolve(&self, params: &[Option<&[u8]>]) -> Option<String> {
        match self {
            ConfigArg::Literal(s) => Some(s.clone()),
            ConfigArg::Param(i) => params
                .get(*i)
                .copied()
                .flatten()
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned),
        }
    }
}

/// Quotes `value` as a dollar-quoted string constant, which needs no escaping whatever
/// `standard_conforming_strings` is.
pub fn quote_literal(value: &str) -> String {
    let mut tag = String::from("ocelot");
    while value.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!("${tag}${value}${tag}$")
}

/// Quotes a (possibly dotted, e.g. `app.user`) parameter name part by part, so reserved words are safe.
pub fn quote_name(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// The SET a set_config call amounts to.
fn set_config(name: &str, value: &str) -> SessionCommand {
    let name = name.to_ascii_lowercase();
    SessionCommand::Set {
        statement: format!("SET {} TO {}", quote_name(&name), quote_literal(value)),
        name,
    }
}

impl SessionCommand {
    /// Resolves a parameterised set_config with Bind values (text format); `None` when they are not known.
    pub fn with_params(&self, params: &[Option<&[u8]>]) -> Option<SessionCommand> {
        match self {
            SessionCommand::SetConfig { name, value } => {
                Some(set_config(&name.resolve(params)?, &value.resolve(params)?))
            }
            other => Some(other.clone()),
        }
    }
}

/// Whether `sql` mentions set_config, which can change a setting from inside any query.
pub fn mentions_set_config(sql: &[u8]) -> bool {
    sql.windows(10)
        .any(|w| w.eq_ignore_ascii_case(b"set_config"))
}

/// Whether `sql` may contain a session command at all (a cheap scan; false negatives are impossible).
pub fn may_change_session(sql: &[u8]) -> bool {
    const WORDS: [&[u8]; 6] = [
        b"set",
        b"prepare",
        b"deallocate",
        b"discard",
        b"listen",
        b"reset",
    ];
    sql.windows(3).enumerate().any(|(i, w)| {
        let w0 = w[0].to_ascii_lowercase();
        matches!(w0, b's' | b'p' | b'd' | b'l' | b'r')
            && WORDS.iter().any(|word| {
                sql.get(i..i + word.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(word))
            })
    })
}

/// Where the string literal, quoted name, comment or dollar-quoted string that starts at byte `i` of `b` ends
/// (exclusive; the end of `b` when it is not closed), or `None` when none starts there. See [`super::lex`].
pub fn skip_quoted(b: &[u8], i: usize) -> Option<usize> {
    super::lex::quoted_end_at(b, i)
}

/// Splits `sql` into statements at top-level semicolons; statements of only space and comments are left out.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for t in tokens(sql) {
        if t.kind == Kind::Punct && sql.as_bytes()[t.span.start] == b';' {
            out.push(&sql[start..t.span.start]);
            start = t.span.end;
        }
    }
    out.push(&sql[start..]);
    out.retain(|s| !strip_leading(s).is_empty());
    out
}

/// Skips whitespace and comments.
fn strip_leading(s: &str) -> &str {
    let start = tokens(s)
        .find(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
        .map_or(s.len(), |t| t.span.start);
    &s[start..]
}

/// Splits off the next word (identifier, possibly double-quoted, or a symbol) and the rest.
fn next_word(s: &str) -> (String, &str) {
    let s = strip_leading(s);
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                    continue;
                }
                return (name, &rest[i + 1..]);
            }
            name.push(c);
        }
        return (name, "");
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '$'))
        .unwrap_or(s.len());
    if end == 0 {
        let n = s.chars().next().map_or(0, char::len_utf8);
        return (s[..n].to_owned(), &s[n..]);
    }
    (s[..end].to_ascii_lowercase(), &s[end..])
}

/// Classifies one statement.
pub fn classify(stmt: &str) -> SessionCommand {
    let text = strip_leading(stmt).trim_end();
    let (first, rest) = next_word(text);
    match first.as_str() {
        "set" => classify_set(text, rest),
        "reset" => match next_word(rest).0.as_str() {
            "all" => SessionCommand::ResetAll,
            "" => SessionCommand::Other,
            "session" => SessionCommand::Reset {
                name: "session_authorization".into(),
            },
            "time" => SessionCommand::Reset {
                name: "timezone".into(),
            },
            name => SessionCommand::Reset { name: name.into() },
        },
        "prepare" => {
            let (name, _) = next_word(rest);
            if name == "transaction" || name.is_empty() {
                return SessionCommand::Other;
            }
            SessionCommand::Prepare {
                name,
                statement: text.to_owned(),
            }
        }
        "deallocate" => {
            let (mut name, after) = next_word(rest);
            if name == "prepare" {
                name = next_word(after).0;
            }
            match name.as_str() {
                "all" => SessionCommand::DeallocateAll,
                "" => SessionCommand::Other,
                _ => SessionCommand::Deallocate { name },
            }
        }
        "discard" if next_word(rest).0 == "all" => SessionCommand::DiscardAll,
        "listen" => SessionCommand::Listen {
            channel: next_word(rest).0,
        },
        "unlisten" => match next_word(rest).0.as_str() {
            "*" => SessionCommand::UnlistenAll,
            channel => SessionCommand::Unlisten {
                channel: channel.into(),
            },
        },
        "select" => classify_set_config(rest),
        _ => SessionCommand::Other,
    }
}

/// `SET [SESSION] name ...` (the whole statement `text`, `rest` after SET): the setting's name as
/// PostgreSQL spells it, with `SET LOCAL` and `SET TRANSACTION` apart.
fn classify_set(text: &str, rest: &str) -> SessionCommand {
    let (mut name, mut after) = next_word(rest);
    match name.as_str() {
        "local" => return SessionCommand::SetLocal,
        "session" => {
            let (n, a) = next_word(after);
            if n == "authorization" {
                return SessionCommand::Set {
                    name: "session_authorization".into(),
                    statement: text.to_owned(),
                };
            }
            (name, after) = (n, a);
        }
        "time" => {
            let (n, _) = next_word(after);
            if n == "zone" {
                name = "timezone".into();
            }
        }
        "transaction" => return SessionCommand::Other,
        _ => {}
    }
    let _ = after;
    if name.is_empty() {
        return SessionCommand::Other;
    }
    SessionCommand::Set {
        name,
        statement: text.to_owned(),
    }
}

/// `SELECT set_config('name', 'value', false)` alone: a session-level SET written as a function call.
fn classify_set_config(rest: &str) -> SessionCommand {
    let (f, rest) = next_word(rest);
    if f != "set_config" && f != "pg_catalog.set_config" {
        return SessionCommand::Other;
    }
    // The rest as tokens, space and comments left out: `( arg [::type] , arg [::type] , false )`.
    let mut toks = tokens(rest)
        .filter(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
        .map(|t| (t.kind, &rest[t.span]))
        .peekable();
    let punct = |want: &str, toks: &mut std::iter::Peekable<_>| matches!(toks.next(), Some((Kind::Punct, p)) if p == want);
    if !punct("(", &mut toks) {
        return SessionCommand::Other;
    }
    let mut lits = Vec::new();
    for _ in 0..2 {
        let arg = match toks.next() {
            Some((Kind::String, t)) if t.len() >= 2 => {
                ConfigArg::Literal(t[1..t.len() - 1].replace("''", "'"))
            }
            Some((Kind::Param, t)) => match t[1..].parse::<usize>() {
                Ok(n) if n > 0 => ConfigArg::Param(n - 1),
                _ => return SessionCommand::Other,
            },
            _ => return SessionCommand::Other,
        };
        lits.push(arg);
        // An optional cast such as ::text.
        if toks.peek() == Some(&(Kind::Punct, ":")) {
            toks.next();
            if !punct(":", &mut toks) || !matches!(toks.next(), Some((Kind::Word, _))) {
                return SessionCommand::Other;
            }
        }
        if !punct(",", &mut toks) {
            return SessionCommand::Other;
        }
    }
    let session_wide =
        matches!(toks.next(), Some((Kind::Word, w)) if w.eq_ignore_ascii_case("false"));
    if !session_wide || !punct(")", &mut toks) {
        return SessionCommand::Other;
    }
    let value = lits.pop().unwrap_or(ConfigArg::Param(usize::MAX));
    let name = lits.pop().unwrap_or(ConfigArg::Param(usize::MAX));
    match (&name, &value) {
        (ConfigArg::Literal(n), ConfigArg::Literal(v)) => set_config(n, v),
        _ => SessionCommand::SetConfig { name, value },
    }
}

#[cfg(test)]
mod tests {
    use super::SessionCommand as C;
    use super::*;

    #[test]
    fn splits_statements_respecting_quotes_and_comments() {
        let q = "SET a = 'x;y'; select $$;$$; /* ; */ select \"a;b\" -- ;\n; select $1";
        assert_eq!(
            split_statements(q),
            vec![
                "SET a = 'x;y'",
                " select $$;$$",
                " /* ; */ select \"a;b\" -- ;\n",
                " select $1"
            ]
        );
        assert_eq!(split_statements("  ;; "), Vec::<&str>::new());
    }

    #[test]
    fn classifies_session_commands() {
        let set = |n: &str, s: &str| C::Set {
            name: n.into(),
            statement: s.into(),
        };
        assert_eq!(
            classify(" SET work_mem = '8MB'"),
            set("work_mem", "SET work_mem = '8MB'")
        );
        assert_eq!(
            classify("set session search_path to a, b"),
            set("search_path", "set session search_path to a, b")
        );
        assert_eq!(
            classify("SET TIME ZONE 'UTC'"),
            set("timezone", "SET TIME ZONE 'UTC'")
        );
        assert_eq!(
            classify("SET myapp.user_id = 7"),
            set("myapp.user_id", "SET myapp.user_id = 7")
        );
        assert_eq!(
            classify("SET \"MyApp\".x = 1").clone(),
            set("MyApp", "SET \"MyApp\".x = 1")
        );
        assert_eq!(classify("SET LOCAL work_mem = 1"), C::SetLocal);
        assert_eq!(
            classify("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            C::Other
        );
        assert_eq!(
            classify("RESET work_mem"),
            C::Reset {
                name: "work_mem".into()
            }
        );
        assert_eq!(classify("reset all"), C::ResetAll);
        assert_eq!(
            classify("PREPARE q(int) AS SELECT $1"),
            C::Prepare {
                name: "q".into(),
                statement: "PREPARE q(int) AS SELECT $1".into()
            }
        );
        assert_eq!(
            classify("DEALLOCATE PREPARE q"),
            C::Deallocate { name: "q".into() }
        );
        assert_eq!(classify("deallocate all"), C::DeallocateAll);
        assert_eq!(classify("DISCARD ALL"), C::DiscardAll);
        assert_eq!(
            classify("LISTEN chan"),
            C::Listen {
                channel: "chan".into()
            }
        );
        assert_eq!(classify("UNLISTEN *"), C::UnlistenAll);
        assert_eq!(
            classify("SELECT set_config('app.tenant', 'it''s', false)"),
            set(
                "app.tenant",
                "SET \"app\".\"tenant\" TO $ocelot$it's$ocelot$"
            )
        );
        assert_eq!(classify("SELECT set_config('a', 'b', true)"), C::Other);
        let p = classify("select set_config($1, $2::text, false)");
        assert_eq!(
            p,
            C::SetConfig {
                name: ConfigArg::Param(0),
                value: ConfigArg::Param(1)
            }
        );
        assert_eq!(
            p.with_params(&[Some(b"app.user"), Some(b"42")]),
            Some(set(
                "app.user",
                "SET \"app\".\"user\" TO $ocelot$42$ocelot$"
            ))
        );
        assert_eq!(p.with_params(&[Some(b"app.user"), None]), None);
        assert_eq!(classify("SELECT 1"), C::Other);
        assert_eq!(classify("UPDATE t SET a = 1"), C::Other);
    }

    #[test]
    fn quick_scan() {
        assert!(!may_change_session(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(may_change_session(b"UPDATE t SET a = 1"));
        assert!(may_change_session(b"PREPARE x AS SELECT 1"));
        assert!(may_change_session(b"select set_config('a','b',false)"));
    }
}
