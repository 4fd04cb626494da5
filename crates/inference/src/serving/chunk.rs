//! `pgml.chunk(splitter, text, kwargs)`: LangChain's `character` and `recursive_character` text splitters, as
//! PostgresML runs them, with the same constructor arguments (`chunk_size`, `chunk_overlap`, `separator` /
//! `separators`, `keep_separator`, `is_separator_regex`, `strip_whitespace`). Lengths are counted in characters
//! (Python's `len`). The answer is PostgresML's `TABLE (chunk_index bigint, chunk text)`, numbered from 1.

use bytes::BytesMut;
use serde_json::{Map, Value};

use crate::registry::models::{refuse, Refusal};
use crate::sql::call::{bind, Arg, Call};
use ocelot_protocol::encode;

/// Answers `pgml.chunk(splitter, text, kwargs)` with constant arguments; a NULL text has no chunks.
pub(crate) fn serve(call: &Call, out: &mut BytesMut) -> Result<(), Refusal> {
    let params = [
        ("splitter", None),
        ("text", None),
        ("kwargs", Some(Arg::Text("{}".into()))),
    ];
    let args = bind(call, &params)?;
    let name = args
        .get("splitter")
        .and_then(Arg::as_text)
        .ok_or_else(|| refuse("22004", "splitter must not be NULL"))?;
    let kwargs = match args.get("kwargs").and_then(Arg::as_text) {
        None => Map::new(),
        Some(k) => match serde_json::from_str::<Value>(k) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(refuse(
                    "22P02",
                    format!("kwargs must be a JSON object, not {k}"),
                ))
            }
        },
    };
    let splitter = Splitter::new(name, &kwargs).map_err(|e| refuse("22023", e))?;
    let chunks = match args.get("text") {
        Some(Arg::Text(t)) => splitter.split(t),
        _ => Vec::new(),
    };
    encode::row_description_typed(out, &[("chunk_index", 20, 8), ("chunk", 25, -1)]);
    for (i, c) in chunks.iter().enumerate() {
        encode::data_row_text(out, &[&(i + 1).to_string(), c]);
    }
    encode::command_complete(out, &format!("SELECT {}", chunks.len()));
    Ok(())
}

/// Where a kept separator goes: with the piece after it (`start`, LangChain's `True`) or before it (`end`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Keep {
    No,
    Start,
    End,
}

/// A separator: literal text, or a regular expression.
#[derive(Debug, Clone)]
enum Separator {
    Literal(String),
    Regex(regex::Regex),
}

impl Separator {
    fn new(s: &str, regex: bool) -> Result<Separator, String> {
        if regex {
            regex::Regex::new(s)
                .map(Separator::Regex)
                .map_err(|e| format!("invalid separator regex {s:?}: {e}"))
        } else {
            Ok(Separator::Literal(s.to_owned()))
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Separator::Literal(s) => s.is_empty(),
            Separator::Regex(r) => r.as_str().is_empty(),
        }
    }

    /// The byte ranges where it occurs in `text`.
    fn matches(&self, text: &str) -> Vec<(usize, usize)> {
        match self {
            Separator::Literal(s) => text
                .match_indices(s.as_str())
                .map(|(at, m)| (at, at + m.len()))
                .collect(),
            Separator::Regex(r) => r.find_iter(text).map(|m| (m.start(), m.end())).collect(),
        }
    }

    /// The text joining merged pieces: the separator itself when it was dropped from them.
    fn joiner(&self, keep: Keep) -> &str {
        match (self, keep) {
            (Separator::Literal(s), Keep::No) => s,
            (Separator::Regex(r), Keep::No) => r.as_str(),
            _ => "",
        }
    }
}

/// A configured splitter.
#[derive(Debug)]
pub(crate) struct Splitter {
    recursive: bool,
    separators: Vec<Separator>,
    chunk_size: usize,
    chunk_overlap: usize,
    keep: Keep,
    strip: bool,
}

/// `keep_separator`: LangChain's `True` is `start`; the default is `True` for the recursive splitter only.
fn keep_of(v: Option<&Value>, recursive: bool) -> Result<Keep, String> {
    Ok(match v {
        None if recursive => Keep::Start,
        None => Keep::No,
        Some(Value::Bool(true)) => Keep::Start,
        Some(Value::Bool(false)) => Keep::No,
        Some(Value::String(s)) if s == "start" => Keep::Start,
        Some(Value::String(s)) if s == "end" => Keep::End,
        Some(v) => {
            return Err(format!(
                "keep_separator must be true, false, \"start\" or \"end\", not {v}"
            ))
        }
    })
}

/// The separators: `separators` (recursive; LangChain's default list) or `separator` (character; a blank line).
fn separators_of(kwargs: &Map<String, Value>, recursive: bool) -> Result<Vec<String>, String> {
    if recursive {
        return match kwargs.get("separators") {
            None | Some(Value::Null) => {
                Ok(vec!["\n\n".into(), "\n".into(), " ".into(), String::new()])
            }
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "separators must be strings".to_owned())
                })
                .collect(),
            Some(v) => Err(format!("separators must be a list of strings, not {v}")),
        };
    }
    match kwargs.get("separator") {
        None => Ok(vec!["\n\n".into()]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(v) => Err(format!("separator must be a string, not {v}")),
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Python's `str.strip()`: its whitespace also includes the separators U+001C to U+001F.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

impl Splitter {
    /// The splitter named `name` with LangChain's constructor arguments `kwargs`.
    pub(crate) fn new(name: &str, kwargs: &Map<String, Value>) -> Result<Splitter, String> {
        let recursive = match name {
            "recursive_character" => true,
            "character" => false,
            "latex" | "markdown" | "nltk" | "python" | "spacy" => {
                return Err(format!(
                    "Ocelot does not run the {name} splitter; it runs character and recursive_character"
                ))
            }
            other => return Err(format!("Unknown splitter: {other}")),
        };
        let int = |key: &str, default: i64| -> Result<i64, String> {
            match kwargs.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| format!("{key} must be an integer, not {v}")),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, String> {
            match kwargs.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| format!("{key} must be true or false, not {v}")),
            }
        };
        for key in kwargs.keys() {
            let known = [
                "chunk_size",
                "chunk_overlap",
                "keep_separator",
                "is_separator_regex",
                "strip_whitespace",
                "add_start_index",
                if recursive { "separators" } else { "separator" },
            ];
            if !known.contains(&key.as_str()) {
                return Err(format!(
                    "{name} splitter got an unexpected keyword argument '{key}'"
                ));
            }
        }
        let chunk_size = int("chunk_size", 4000)?;
        let chunk_overlap = int("chunk_overlap", 200)?;
        if chunk_size <= 0 {
            return Err(format!("chunk_size must be > 0, got {chunk_size}"));
        }
        if chunk_overlap < 0 {
            return Err(format!("chunk_overlap must be >= 0, got {chunk_overlap}"));
        }
        if chunk_overlap > chunk_size {
            return Err(format!(
                "Got a larger chunk overlap ({chunk_overlap}) than chunk size ({chunk_size}), should be smaller."
            ));
        }
        let keep = keep_of(kwargs.get("keep_separator"), recursive)?;
        let regex = flag("is_separator_regex", false)?;
        let texts = separators_of(kwargs, recursive)?;
        let separators = texts
            .iter()
            .map(|s| Separator::new(s, regex))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Splitter {
            recursive,
            separators,
            chunk_size: chunk_size as usize,
            chunk_overlap: chunk_overlap as usize,
            keep,
            strip: flag("strip_whitespace", true)?,
        })
    }

    /// The chunks of `text`.
    pub(crate) fn split(&self, text: &str) -> Vec<String> {
        if self.recursive {
            self.split_recursive(text, &self.separators)
        } else {
            let Some(sep) = self.separators.first() else {
                return Vec::new();
            };
            let pieces = self.pieces(text, sep);
            self.merge(&pieces, sep.joiner(self.keep))
        }
    }

    /// `text` split at `sep`, the separator kept with the piece after or before it, empty pieces dropped.
    fn pieces(&self, text: &str, sep: &Separator) -> Vec<String> {
        if sep.is_empty() {
            return text.chars().map(String::from).collect();
        }
        let mut out = Vec::new();
        let mut carried = String::new();
        let mut last = 0;
        for (start, end) in sep.matches(text) {
            let piece = &text[last..start];
            let found = &text[start..end];
            match self.keep {
                Keep::No => out.push(piece.to_owned()),
                Keep::Start => {
                    out.push(format!("{carried}{piece}"));
                    carried = found.to_owned();
                }
                Keep::End => out.push(format!("{piece}{found}")),
            }
            last = end;
        }
        out.push(format!("{carried}{}", &text[last..]));
        out.retain(|s| !s.is_empty());
        out
    }

    fn split_recursive(&self, text: &str, separators: &[Separator]) -> Vec<String> {
        // The first separator that occurs in the text (the empty one always does), and the finer ones after it.
        let mut at = separators.len().saturating_sub(1);
        for (i, s) in separators.iter().enumerate() {
            if s.is_empty() || !s.matches(text).is_empty() {
                at = i;
                break;
            }
        }
        let Some(sep) = separators.get(at) else {
            return Vec::new();
        };
        let finer = if sep.is_empty() {
            &[][..]
        } else {
            &separators[at + 1..]
        };
        let joiner = sep.joiner(self.keep);
        let mut chunks = Vec::new();
        let mut good: Vec<String> = Vec::new();
        for piece in self.pieces(text, sep) {
            if chars(&piece) < self.chunk_size {
                good.push(piece);
                continue;
            }
            if !good.is_empty() {
                chunks.extend(self.merge(&good, joiner));
                good.clear();
            }
            if finer.is_empty() {
                chunks.push(piece);
            } else {
                chunks.extend(self.split_recursive(&piece, finer));
            }
        }
        if !good.is_empty() {
            chunks.extend(self.merge(&good, joiner));
        }
        chunks
    }

    /// Joins pieces into chunks of at most `chunk_size` characters (a single longer piece stays whole), each
    /// starting with up to `chunk_overlap` characters of the end of the one before.
    fn merge(&self, pieces: &[String], joiner: &str) -> Vec<String> {
        let sep_len = chars(joiner);
        let mut chunks = Vec::new();
        let mut current: std::collections::VecDeque<(&str, usize)> = Default::default();
        let mut total = 0usize;
        for piece in pieces {
            let len = chars(piece);
            let with_sep = |current: &std::collections::VecDeque<(&str, usize)>| {
                if current.is_empty() {
                    0
                } else {
                    sep_len
                }
            };
            if total + len + with_sep(&current) > self.chunk_size && !current.is_empty() {
                if let Some(doc) = self.join(&current, joiner) {
                    chunks.push(doc);
                }
                while total > self.chunk_overlap
                    || (total + len + with_sep(&current) > self.chunk_size && total > 0)
                {
                    let Some((_, first)) = current.pop_front() else {
                        break;
                    };
                    total -= first + if current.is_empty() { 0 } else { sep_len };
                }
            }
            current.push_back((piece, len));
            total += len + if current.len() > 1 { sep_len } else { 0 };
        }
        if let Some(doc) = self.join(&current, joiner) {
            chunks.push(doc);
        }
        chunks
    }

    fn join(
        &self,
        pieces: &std::collections::VecDeque<(&str, usize)>,
        joiner: &str,
    ) -> Option<String> {
        let text = pieces
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(joiner);
        let text = if self.strip {
            py_strip(&text).to_owned()
        } else {
            text
        };
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(name: &str, kwargs: &str, text: &str) -> Vec<String> {
        let kwargs: Map<String, Value> = serde_json::from_str(kwargs).unwrap();
        Splitter::new(name, &kwargs).unwrap().split(text)
    }

    #[test]
    fn recursive_splits_at_the_coarsest_separator_that_fits() {
        let text = "One paragraph here.\n\nAnother one, a little longer than the first.\nWith a second line.";
        assert_eq!(
            split(
                "recursive_character",
                r#"{"chunk_size": 30, "chunk_overlap": 0}"#,
                text
            ),
            vec![
                "One paragraph here.",
                "Another one, a little longer",
                "than the first.",
                "With a second line."
            ]
        );
        // Overlap carries whole pieces (words here) from the end of the previous chunk.
        assert_eq!(
            split(
                "recursive_character",
                r#"{"chunk_size": 12, "chunk_overlap": 5}"#,
                "aa bb cc dd ee ff"
            ),
            vec!["aa bb cc dd", "dd ee ff"]
        );
        // No separator left: single characters.
        assert_eq!(
            split(
                "recursive_character",
                r#"{"chunk_size": 3, "chunk_overlap": 1}"#,
                "abcdefg"
            ),
            vec!["abc", "cde", "efg"]
        );
    }

    #[test]
    fn character_splits_at_one_separator_and_keeps_long_pieces_whole() {
        assert_eq!(
            split(
                "character",
                r#"{"separator": " ", "chunk_size": 7, "chunk_overlap": 0}"#,
                "a bb ccccccccc d"
            ),
            vec!["a bb", "ccccccccc", "d"]
        );
        assert_eq!(
            split(
                "character",
                r#"{"separator": "-", "keep_separator": "end", "chunk_size": 4, "chunk_overlap": 0}"#,
                "ab-cd-ef"
            ),
            vec!["ab-", "cd-", "ef"]
        );
        assert!(split("character", "{}", "  \n\n  ").is_empty());
        assert_eq!(
            split(
                "character",
                r#"{"separator": "\\d", "is_separator_regex": true, "chunk_size": 2, "chunk_overlap": 0}"#,
                "a1b2c"
            ),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn bad_arguments_are_refused_as_langchain_refuses_them() {
        let make =
            |name: &str, kwargs: &str| Splitter::new(name, &serde_json::from_str(kwargs).unwrap());
        assert_eq!(make("nope", "{}").unwrap_err(), "Unknown splitter: nope");
        assert!(
            make("character", r#"{"chunk_size": 10, "chunk_overlap": 20}"#)
                .unwrap_err()
                .starts_with("Got a larger chunk overlap (20) than chunk size (10)")
        );
        assert!(make("character", r#"{"chunk_size": 0}"#).is_err());
        assert!(make("character", r#"{"separators": ["x"]}"#).is_err());
        assert!(make("recursive_character", r#"{"separators": "x"}"#).is_err());
        assert!(make("markdown", "{}").is_err());
    }
}
