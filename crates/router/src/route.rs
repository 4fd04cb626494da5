//! Where a query goes, worked out once per query shape. [`Analyzer::analyze`] gives a query's read/write route
//! and the sharding-key values it is restricted to from one sqlparser parse, and remembers both under the query's
//! shape ([`super::lex::mask`]): the next query that differs only in its constants costs a lexer pass, no parse,
//! its key values read from its own literals. What cannot be read that way (a key built from several literals,
//! a constant that occurs twice) is remembered under its exact text instead. Fan-out plans, INSERT splitting and
//! nearest-neighbour targets rewrite the query's text, so they parse it ([`parse`]) when a query needs them.

use std::collections::HashMap;

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::classify::{classify_parsed, Route};
use super::lex::{mask, Literal};
use super::shard_key::{find_parsed, KeySpec, KeyValue};

/// The statements of `sql` in PostgreSQL's dialect, `None` when sqlparser cannot read them. sqlparser wants
/// `COPY ... FROM STDIN` to end with a semicolon (inline data may follow it): one is added when missing.
pub fn parse(sql: &str) -> Option<Vec<Statement>> {
    Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .or_else(|e| {
            let t = sql.trim_start();
            let copy = t.get(..4).is_some_and(|w| w.eq_ignore_ascii_case("copy"));
            if t.len() > 4 && copy && !sql.trim_end().ends_with(';') {
                Parser::parse_sql(&PostgreSqlDialect {}, &format!("{sql};"))
            } else {
                Err(e)
            }
        })
        .ok()
}

/// A pool's routing settings, as analysis needs them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules<'a> {
    /// Functions (lower case) whose calls make a SELECT a write.
    pub volatile: &'a [String],
    /// Texts longer than this are not parsed for their route (PgCat's `query_parser_max_length`): writes.
    pub max_length: Option<usize>,
    /// The sharding key, on a sharded pool.
    pub key: Option<&'a KeySpec>,
}

/// What routing needs to know about one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub route: Route,
    /// The key values the query is restricted to (`None`: unrestricted, or no key configured).
    pub keys: Option<Vec<KeyValue>>,
    /// Answered from the cache, without a parse.
    pub hit: bool,
}

/// A key value of a remembered shape: a Bind parameter, or the literal at `index` of the query at hand.
#[derive(Debug, Clone)]
enum KeyRef {
    Param(usize),
    Literal { index: usize, negated: bool },
}

#[derive(Debug, Clone)]
enum Keys {
    /// Read from each query's own literals.
    Shaped(Option<Vec<KeyRef>>),
    /// For this exact text only.
    Exact(Option<Vec<KeyValue>>),
}

#[derive(Debug, Clone)]
struct Entry {
    route: Route,
    keys: Keys,
}

/// Distinct shapes remembered per analyzer before it starts over.
const CAPACITY: usize = 512;

/// Exact-text entries are keyed with this first character, which no Query text or shape contains.
const EXACT: char = '\0';

/// One session's cache of analyses by query shape.
#[derive(Debug, Default)]
pub struct Analyzer {
    entries: HashMap<Box<str>, Entry>,
    shape: String,
    literals: Vec<Literal>,
}

impl Analyzer {
    /// Forgets every analysis (the pool's rules changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The route and key values of `sql` under `rules`.
    pub fn analyze(&mut self, sql: &str, rules: &Rules) -> Analysis {
        let over = rules.max_length.is_some_and(|max| sql.len() > max);
        mask(sql, &mut self.shape, &mut self.literals);
        if let Some(e) = self.entries.get(self.shape.as_str()) {
            if let Keys::Shaped(keys) = &e.keys {
                return Analysis {
                    route: if over { Route::Write } else { e.route },
                    keys: keys.as_ref().map(|k| resolve(k, &self.literals)),
                    hit: true,
                };
            }
        }
        self.shape.clear();
        self.shape.push(EXACT);
        self.shape.push_str(sql);
        if let Some(Entry {
            route,
            keys: Keys::Exact(keys),
        }) = self.entries.get(self.shape.as_str())
        {
            return Analysis {
                route: if over { Route::Write } else { *route },
                keys: keys.clone(),
                hit: true,
            };
        }
        let statements = parse(sql);
        let route = statements
            .as_deref()
            .map_or(Route::Write, |s| classify_parsed(s, rules.volatile));
        let keys = match (&statements, rules.key) {
            (Some(s), Some(spec)) => find_parsed(s, spec),
            _ => None,
        };
        let entry = Entry {
            route,
            keys: match &keys {
                None => Keys::Shaped(None),
                Some(k) => match refs(k, &self.literals) {
                    Some(r) => Keys::Shaped(Some(r)),
                    None => Keys::Exact(Some(k.clone())),
                },
            },
        };
        if self.entries.len() >= CAPACITY {
            self.entries.clear();
        }
        let key = match &entry.keys {
            Keys::Shaped(_) => {
                mask(sql, &mut self.shape, &mut self.literals);
                self.shape.as_str()
            }
            Keys::Exact(_) => self.shape.as_str(),
        };
        self.entries.insert(key.into(), entry);
        Analysis {
            route: if over { Route::Write } else { route },
            keys,
            hit: false,
        }
    }
}

/// The key values of a query from its literals.
fn resolve(refs: &[KeyRef], literals: &[Literal]) -> Vec<KeyValue> {
    refs.iter()
        .map(|r| match r {
            KeyRef::Param(i) => KeyValue::Param(*i),
            KeyRef::Literal { index, negated } => {
                let v = literals.get(*index).map_or("", |l| l.value.as_str());
                KeyValue::Literal(if *negated {
                    format!("-{v}")
                } else {
                    v.to_owned()
                })
            }
        })
        .collect()
}

/// Where each key literal stands among the query's literals, `None` unless every one stands in exactly one place.
fn refs(keys: &[KeyValue], literals: &[Literal]) -> Option<Vec<KeyRef>> {
    keys.iter()
        .map(|k| match k {
            KeyValue::Param(i) => Some(KeyRef::Param(*i)),
            KeyValue::Literal(v) => {
                let negative = v.strip_prefix('-');
                let mut found = literals.iter().enumerate().flat_map(|(index, l)| {
                    let plain = (l.value == *v).then_some(KeyRef::Literal {
                        index,
                        negated: false,
                    });
                    let negated = (l.negatable && negative == Some(l.value.as_str())).then_some(
                        KeyRef::Literal {
                            index,
                            negated: true,
                        },
                    );
                    plain.into_iter().chain(negated)
                });
                let first = found.next()?;
                found.next().is_none().then_some(first)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> KeySpec {
        KeySpec {
            table: "users".into(),
            column: "id".into(),
        }
    }

    /// Every query analyses the same through the cache as parsed on its own.
    #[test]
    fn cached_analyses_equal_fresh_ones() {
        let spec = spec();
        let volatile = vec!["nextval".to_owned()];
        let rules = Rules {
            volatile: &volatile,
            max_length: None,
            key: Some(&spec),
        };
        let queries = [
            "SELECT * FROM users WHERE id = 5",
            "SELECT * FROM users WHERE id = 77",
            "SELECT * FROM users WHERE id = -3",
            "SELECT * FROM users WHERE id = - 4",
            "SELECT * FROM users WHERE id = '12'",
            "SELECT * FROM users WHERE id = 'it''s'",
            "SELECT * FROM users WHERE id = 5 AND x = 5",
            "SELECT * FROM users WHERE id = 6 AND x = 5",
            "SELECT * FROM users WHERE id IN (1, 2, 3)",
            "SELECT * FROM users WHERE id IN (4, 5, 4)",
            "SELECT * FROM users WHERE id = $1 AND x = 3",
            "SELECT * FROM users WHERE id = ARRAY[1, 2]",
            "SELECT * FROM users WHERE id = ARRAY[3, 4]",
            "UPDATE users SET x = 1 WHERE id = 2",
            "UPDATE users SET x = 2 WHERE id = 2",
            "INSERT INTO users (id, x) VALUES (1, 'a')",
            "INSERT INTO users (id, x) VALUES (2, 'b')",
            "INSERT INTO users (id, x) VALUES (7, 'c'), (8, 'd')",
            "SELECT nextval('s') FROM users WHERE id = 1",
            "SELECT * FROM users WHERE id = 1 /* a */ FOR UPDATE",
            "SELECT * FROM users WHERE id = 2 /* b */ FOR UPDATE",
            "SELECT * FROM users WHERE id = 1 -- x",
            "SELECT * FROM users WHERE id = 'a",
            "SELECT * FROM users WHERE id = 0x1F",
            "SELECT * FROM users WHERE id = 1e5",
            "SELECT 1",
            "SELECT 2",
            "not sql 1",
            "not sql 2",
        ];
        let mut a = Analyzer::default();
        for round in 0..2 {
            for q in queries {
                let got = a.analyze(q, &rules);
                let statements = parse(q);
                let route = statements
                    .as_deref()
                    .map_or(Route::Write, |s| classify_parsed(s, &volatile));
                let keys = statements.as_deref().and_then(|s| find_parsed(s, &spec));
                assert_eq!((got.route, &got.keys), (route, &keys), "{q}");
                if round == 1 {
                    assert!(got.hit, "{q}");
                }
            }
        }
    }

    #[test]
    fn a_constant_only_change_costs_no_parse() {
        let spec = spec();
        let rules = Rules {
            key: Some(&spec),
            ..Rules::default()
        };
        let mut a = Analyzer::default();
        assert!(!a.analyze("SELECT * FROM users WHERE id = 1", &rules).hit);
        let b = a.analyze("SELECT * FROM users WHERE id = 2 /* app=x */", &rules);
        assert!(b.hit);
        assert_eq!(b.keys, Some(vec![KeyValue::Literal("2".into())]));
        // The same constant twice: that text is remembered as it is, and another constant parses again.
        assert!(
            !a.analyze("SELECT * FROM users WHERE id = 1 AND x = 1", &rules)
                .hit
        );
        assert!(
            a.analyze("SELECT * FROM users WHERE id = 1 AND x = 1", &rules)
                .hit
        );
        assert!(
            !a.analyze("SELECT * FROM users WHERE id = 2 AND x = 2", &rules)
                .hit
        );
    }

    #[test]
    fn a_text_over_the_parser_limit_is_a_write() {
        let rules = Rules {
            max_length: Some(10),
            ..Rules::default()
        };
        let mut a = Analyzer::default();
        assert_eq!(a.analyze("SELECT 1", &rules).route, Route::Read);
        assert_eq!(a.analyze("SELECT 1234567", &rules).route, Route::Write);
    }
}
