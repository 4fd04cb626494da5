//! PgCat's routing commands, answered by Ocelot itself: `SET SERVER ROLE TO 'primary|replica|any|auto|default'`,
//! `SHOW SERVER ROLE`, `SET PRIMARY READS TO 'on|off|default'`, `SHOW PRIMARY READS`, `SET SHARD TO 'n|ANY'`,
//! `SET SHARDING KEY TO '...'`, `SHOW SHARD`. Matching is
//! case-insensitive, quotes and a trailing semicolon optional, as PgCat's patterns allow.

/// A routing command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingCommand {
    /// `None` for auto/default: the query parser (or `default_role`) decides again.
    SetServerRole(Option<RoleChoice>),
    ShowServerRole,
    /// `None` for default: the pool's `primary_reads_enabled`.
    SetPrimaryReads(Option<bool>),
    ShowPrimaryReads,
    /// `SET SHARD TO 'n'`; `None` for `'ANY'` (a random shard per transaction).
    SetShard(Option<usize>),
    /// `SET SHARDING KEY TO 'value'`.
    SetShardingKey(String),
    ShowShard,
}

/// A role a session can pin itself to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChoice {
    Primary,
    Replica,
    Any,
}

fn words(sql: &str) -> Option<Vec<String>> {
    let t = sql.trim().trim_end_matches(';').trim();
    if t.is_empty() || t.len() > 64 {
        return None;
    }
    Some(
        t.split_whitespace()
            .map(|w| w.trim_matches('\'').to_ascii_lowercase())
            .collect(),
    )
}

/// Recognises a routing command in a simple Query's text.
pub fn parse(sql: &str) -> Option<RoutingCommand> {
    let w = words(sql)?;
    let w: Vec<&str> = w.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["set", "server", "role", "to", role] => Some(RoutingCommand::SetServerRole(match *role {
            "primary" => Some(RoleChoice::Primary),
            "replica" => Some(RoleChoice::Replica),
            "any" => Some(RoleChoice::Any),
            "auto" | "default" => None,
            _ => return None,
        })),
        ["show", "server", "role"] => Some(RoutingCommand::ShowServerRole),
        ["set", "primary", "reads", "to", v] => Some(RoutingCommand::SetPrimaryReads(match *v {
            "on" => Some(true),
            "off" => Some(false),
            "default" => None,
            _ => return None,
        })),
        ["show", "primary", "reads"] => Some(RoutingCommand::ShowPrimaryReads),
        ["set", "shard", "to", v] => Some(RoutingCommand::SetShard(match *v {
            "any" => None,
            n => Some(n.parse().ok()?),
        })),
        ["set", "sharding", "key", "to", v] => {
            Some(RoutingCommand::SetShardingKey((*v).to_owned()))
        }
        ["show", "shard"] => Some(RoutingCommand::ShowShard),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgcat_commands() {
        assert_eq!(
            parse("SET SERVER ROLE TO 'replica';"),
            Some(RoutingCommand::SetServerRole(Some(RoleChoice::Replica)))
        );
        assert_eq!(
            parse("set server role to 'AUTO'"),
            Some(RoutingCommand::SetServerRole(None))
        );
        assert_eq!(
            parse(" SHOW SERVER ROLE "),
            Some(RoutingCommand::ShowServerRole)
        );
        assert_eq!(
            parse("SET PRIMARY READS TO off"),
            Some(RoutingCommand::SetPrimaryReads(Some(false)))
        );
        assert_eq!(
            parse("show primary reads;"),
            Some(RoutingCommand::ShowPrimaryReads)
        );
        assert_eq!(
            parse("SET SHARD TO '2'"),
            Some(RoutingCommand::SetShard(Some(2)))
        );
        assert_eq!(
            parse("set shard to 'ANY';"),
            Some(RoutingCommand::SetShard(None))
        );
        assert_eq!(
            parse("SET SHARDING KEY TO '1234'"),
            Some(RoutingCommand::SetShardingKey("1234".into()))
        );
        assert_eq!(parse("SHOW SHARD"), Some(RoutingCommand::ShowShard));
        assert_eq!(parse("SET SERVER ROLE TO 'boss'"), None);
        assert_eq!(parse("SELECT 1"), None);
    }
}
