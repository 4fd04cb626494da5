//! The session parameters a client expects, carried onto whichever server it gets in transaction mode: the
//! tracked reported parameters (application_name, client_encoding, DateStyle, TimeZone,
//! standard_conforming_strings) and any other settings from its startup packet (e.g. `extra_float_digits`, or
//! `-c name=value` in `options`). Before a client's first message reaches a server, the difference is applied with
//! one Query of SET/RESET statements, and nothing at all is sent when the server already matches.

use crate::canonical;
use crate::params::{is_tracked, TRACKED};
use crate::state::Applied;
use crate::ServerParams;
use ocelot_router::session_sql::{quote_literal, quote_name, SessionCommand};

/// Startup keys that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// What one client expects of its server session.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// Tracked reported parameters, as the client last saw them.
    pub tracked: ServerParams,
    /// Other settings from the startup packet.
    pub(crate) extra: ServerParams,
    /// The client's own SET statements (untracked parameters), by parameter name.
    pub sets: ServerParams,
    /// The client's SQL-level PREPARE statements, by statement name.
    pub(crate) prepares: ServerParams,
}

/// Splits a libpq `options` string into settings: `-c name=value` and `--name=value`, with `\ ` escapes.
pub(crate) fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
        } else {
            w.strip_prefix("-c")
                .or_else(|| w.strip_prefix("--"))
                .map(str::to_owned)
        };
        if let Some((k, v)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

impl ClientParams {
    /// Builds the expected parameters from the server's defaults and the client's startup packet.
    pub fn from_startup(defaults: &ServerParams, startup: &[(String, String)]) -> Self {
        let mut p = ClientParams::default();
        for name in TRACKED {
            if let Some(v) = defaults.get(name) {
                p.tracked.set(name, v);
            }
        }
        let mut set = |k: &str, v: &str| {
            if is_tracked(k) {
                let current = defaults.get(k).unwrap_or_default();
                p.tracked.set(k, &canonical::reported(k, v, current));
            } else if !k.starts_with("_pq_.") {
                p.extra.set(k, v);
            }
        };
        for (k, v) in startup {
            if k == "options" {
                for (k, v) in parse_options(v) {
                    set(&k, &v);
                }
            } else if !NOT_SETTINGS.contains(&k.as_str()) {
                set(k, v);
            }
        }
        p
    }

    /// The statements that make a server with reported `params` and Ocelot-`applied` state match this client,
    /// or `None` when it already does.
    pub fn sync_sql(&self, params: &ServerParams, applied: &Applied) -> Option<String> {
        let mut sql = String::new();
        for (k, v) in self.tracked.iter() {
            if params.get(k) != Some(v) {
                sql.push_str(&format!("SET {} = {};", quote_name(k), quote_literal(v)));
            }
        }
        for (k, v) in self.extra.iter() {
            if applied.startup.get(k) != Some(v) {
                sql.push_str(&format!("SET {} = {};", quote_name(k), quote_literal(v)));
            }
        }
        for (k, _) in applied.startup.iter() {
            if self.extra.get(k).is_none() && self.sets.get(k).is_none() {
                sql.push_str(&format!("RESET {};", quote_name(k)));
            }
        }
        for (k, _) in applied.sets.iter() {
            if self.sets.get(k).is_none() && self.extra.get(k).is_none() {
                sql.push_str(&format!("RESET {};", quote_name(k)));
            }
        }
        for (k, stmt) in self.sets.iter() {
            if applied.sets.get(k) != Some(stmt) {
                sql.push_str(stmt);
                sql.push(';');
            }
        }
        for (k, stmt) in applied.prepares.iter() {
            if self.prepares.get(k) != Some(stmt) {
                sql.push_str(&format!("DEALLOCATE {};", quote_name(k)));
            }
        }
        for (k, stmt) in self.prepares.iter() {
            if applied.prepares.get(k) != Some(stmt) {
                sql.push_str(stmt);
                sql.push(';');
            }
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// After a sync ran: records what is now applied on the server, and adopts the server's spelling of tracked
    /// values (`ISO` becomes `ISO, MDY`) so the next comparison matches without another SET.
    pub fn after_sync(&mut self, params: &ServerParams, applied: &mut Applied) {
        for name in TRACKED {
            if let Some(v) = params.get(name) {
                if self.tracked.get(name).is_some() {
                    self.tracked.set(name, v);
                }
            }
        }
        applied.startup = self.extra.clone();
        applied.sets = self.sets.clone();
        applied.prepares = self.prepares.clone();
    }

    /// Records a session command that took effect. Tracked parameters are left to ParameterStatus.
    pub fn apply(&mut self, cmd: SessionCommand) {
        match cmd {
            SessionCommand::Set { name, statement } if !is_tracked(&name) => {
                self.sets.set(&name, &statement);
            }
            // RESET goes back to the session's start-up value, which includes the startup packet's settings.
            SessionCommand::Reset { name } => self.sets.remove(&name),
            SessionCommand::ResetAll => self.sets.clear(),
            SessionCommand::Prepare { name, statement } => {
                self.prepares.set(&name, &statement);
            }
            SessionCommand::Deallocate { name } => self.prepares.remove(&name),
            SessionCommand::DeallocateAll => self.prepares.clear(),
            SessionCommand::DiscardAll => {
                self.sets.clear();
                self.prepares.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> ServerParams {
        let mut p = ServerParams::default();
        for (k, v) in pairs {
            p.set(k, v);
        }
        p
    }

    #[test]
    fn nothing_to_do_when_matching() {
        let server = params(&[
            ("application_name", ""),
            ("TimeZone", "UTC"),
            ("server_version", "15"),
        ]);
        let c = ClientParams::from_startup(&server, &[("user".into(), "u".into())]);
        assert_eq!(c.sync_sql(&server, &Applied::default()), None);
    }

    #[test]
    fn sets_differences_and_resets_leftovers() {
        let server = params(&[("application_name", ""), ("TimeZone", "UTC")]);
        let c = ClientParams::from_startup(
            &server,
            &[
                ("application_name".into(), "it's $ocelot$".into()),
                ("extra_float_digits".into(), "3".into()),
            ],
        );
        let applied = Applied {
            startup: params(&[("search_path", "x")]),
            ..Applied::default()
        };
        let sql = c.sync_sql(&server, &applied).unwrap();
        assert_eq!(
            sql,
            "SET \"application_name\" = $ocelot_$it's $ocelot$$ocelot_$;SET \"extra_float_digits\" = $ocelot$3$ocelot$;RESET \"search_path\";"
        );
    }

    #[test]
    fn adopts_server_spelling() {
        let server = params(&[("DateStyle", "ISO, MDY"), ("TimeZone", "UTC")]);
        // Spelled as PostgreSQL would at once: nothing to do.
        let c = ClientParams::from_startup(&server, &[("datestyle".into(), "ISO".into())]);
        assert_eq!(c.tracked.get("DateStyle"), Some("ISO, MDY"));
        assert_eq!(c.sync_sql(&server, &Applied::default()), None);
        // Spelled by the server once it was set.
        let mut c = ClientParams::from_startup(&server, &[("timezone".into(), "utc".into())]);
        assert!(c.sync_sql(&server, &Applied::default()).is_some());
        let mut applied = Applied::default();
        c.after_sync(&server, &mut applied);
        assert_eq!(c.sync_sql(&server, &applied), None);
    }

    #[test]
    fn replays_sets_and_prepares_and_undoes_others() {
        let server = params(&[]);
        let mut c = ClientParams::from_startup(&server, &[]);
        c.apply(SessionCommand::Set {
            name: "work_mem".into(),
            statement: "SET work_mem = '8MB'".into(),
        });
        c.apply(SessionCommand::Prepare {
            name: "q".into(),
            statement: "PREPARE q AS SELECT 1".into(),
        });
        let applied = Applied {
            sets: params(&[("lock_timeout", "SET lock_timeout = 5")]),
            prepares: params(&[("other", "PREPARE other AS SELECT 2")]),
            ..Applied::default()
        };
        assert_eq!(
            c.sync_sql(&server, &applied).unwrap(),
            "RESET \"lock_timeout\";SET work_mem = '8MB';DEALLOCATE \"other\";PREPARE q AS SELECT 1;"
        );
        let mut applied = applied;
        c.after_sync(&server, &mut applied);
        assert_eq!(c.sync_sql(&server, &applied), None);
        c.apply(SessionCommand::DiscardAll);
        assert!(c
            .sync_sql(&server, &applied)
            .unwrap()
            .contains("DEALLOCATE \"q\""));
    }

    #[test]
    fn parses_options() {
        assert_eq!(
            parse_options("-c search_path=a\\ b --work-mem=4MB -cstatement_timeout=5"),
            vec![
                ("search_path".into(), "a b".into()),
                ("work_mem".into(), "4MB".into()),
                ("statement_timeout".into(), "5".into())
            ]
        );
    }
}
