//! A lexer for PostgreSQL's SQL: it cuts a query string into words, quoted names, literals, Bind parameters,
//! comments and single punctuation characters, knowing PostgreSQL's quoting rules (doubled quotes, `E'...'`
//! escapes, dollar quotes with tags, nested block comments). It does not parse; it is what routing reads before
//! (and often instead of) sqlparser: [`mask`] turns a query into its shape, the text with its literals masked, so
//! that queries differing only in constants share one parse.

use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyword or an unquoted name.
    Word,
    /// A `"quoted"` name.
    QuotedName,
    /// A plain `'string'`.
    String,
    /// A string with a prefix (`E'...'`, `B'...'`, `X'...'`, `N'...'`, `U&'...'`).
    PrefixedString,
    /// A `$tag$...$tag$` string.
    DollarString,
    Number,
    /// A Bind parameter, `$1`.
    Param,
    Comment,
    Space,
    /// A quote or comment the text ends inside.
    Unterminated,
    /// Any other single character (operators, parentheses, commas).
    Punct,
}

/// One token: its kind and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub span: Range<usize>,
}

/// The tokens of `sql`. Unterminated quotes and comments run to the end of the text.
pub fn tokens(sql: &str) -> impl Iterator<Item = Token> + '_ {
    let b = sql.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at;
        let (kind, end) = next(b, start)?;
        let end = end.min(b.len());
        at = end;
        Some(Token {
            kind,
            span: start..end,
        })
    })
}

/// Where the quoted run or comment starting at byte `i` ends (the end of `b` when the text ends inside it), or
/// `None` when none starts there: for a scanner that steps through the text byte by byte.
pub(crate) fn quoted_end_at(b: &[u8], i: usize) -> Option<usize> {
    // Inside a word (`a$b$`, `name'x'`), a `$` or a prefix letter starts nothing.
    if i > 0 && is_word_char(b[i - 1]) && b.get(i).is_some_and(|&c| is_word_char(c)) {
        return None;
    }
    let (kind, end) = next(b, i)?;
    matches!(
        kind,
        Kind::String
            | Kind::QuotedName
            | Kind::PrefixedString
            | Kind::DollarString
            | Kind::Comment
            | Kind::Unterminated
    )
    .then_some(end.min(b.len()))
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_word_char(c: u8) -> bool {
    is_word_start(c) || c.is_ascii_digit() || c == b'$'
}

/// The token at `i`: its kind and end.
fn next(b: &[u8], i: usize) -> Option<(Kind, usize)> {
    let c = *b.get(i)?;
    let at = |j: usize| b.get(j).copied();
    Some(match c {
        c if c.is_ascii_whitespace() => (
            Kind::Space,
            i + b[i..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count(),
        ),
        b'-' if at(i + 1) == Some(b'-') => (
            Kind::Comment,
            b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p + 1),
        ),
        b'/' if at(i + 1) == Some(b'*') => closed(Kind::Comment, block_comment_end(b, i)),
        b'\'' => closed(Kind::String, quoted_end(b, i + 1, b'\'', false)),
        b'"' => closed(Kind::QuotedName, quoted_end(b, i + 1, b'"', false)),
        b'$' => match at(i + 1) {
            Some(d) if d.is_ascii_digit() => (
                Kind::Param,
                i + 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count(),
            ),
            _ => match dollar_string_end(b, i) {
                Some(end) => closed(Kind::DollarString, end),
                None => (Kind::Punct, i + 1),
            },
        },
        c if c.is_ascii_digit() || (c == b'.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
            (Kind::Number, number_end(b, i))
        }
        c if is_word_start(c) => {
            let end = i + b[i..].iter().take_while(|&&c| is_word_char(c)).count();
            let prefix = &b[i..end];
            if at(end) == Some(b'\'')
                && matches!(
                    prefix,
                    [b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N']
                )
            {
                let escapes = matches!(prefix, [b'e' | b'E']);
                closed(Kind::PrefixedString, quoted_end(b, end + 1, b'\'', escapes))
            } else if matches!(prefix, [b'u' | b'U'])
                && at(end) == Some(b'&')
                && at(end + 1) == Some(b'\'')
            {
                closed(Kind::PrefixedString, quoted_end(b, end + 2, b'\'', false))
            } else {
                (Kind::Word, end)
            }
        }
        // One character, or one whole UTF-8 sequence when the text is not ASCII there.
        _ => (Kind::Punct, i + 1),
    })
}

/// A quoted run or comment of `kind` ending at `end`, or one the text ends inside.
fn closed(kind: Kind, end: Option<usize>) -> (Kind, usize) {
    match end {
        Some(end) => (kind, end),
        None => (Kind::Unterminated, usize::MAX),
    }
}

/// The end of a quoted run whose opening quote is just before `i`: a doubled quote stands for one, and with
/// `escapes` a backslash escapes the next byte.
fn quoted_end(b: &[u8], mut i: usize, quote: u8, escapes: bool) -> Option<usize> {
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            c if c == quote => {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn block_comment_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The end of the dollar-quoted string opening at `i` (`$$` or `$tag$`; `Some(None)` when unterminated), or
/// `None` when `i` opens no tag.
fn dollar_string_end(b: &[u8], i: usize) -> Option<Option<usize>> {
    let tag_len = b[i + 1..]
        .iter()
        .take_while(|&&c| is_word_start(c) || c.is_ascii_digit())
        .count();
    if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) || b.get(i + 1 + tag_len) != Some(&b'$') {
        return None;
    }
    let tag = &b[i..i + tag_len + 2];
    let body = i + tag.len();
    Some(
        b[body..]
            .windows(tag.len())
            .position(|w| w == tag)
            .map(|p| body + p + tag.len()),
    )
}

/// Digits with a fraction and an exponent, or PostgreSQL 16's `0x1F`, `0o17`, `0b101` and `1_000`.
fn number_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        let c = b[i];
        let exponent_sign = matches!(c, b'+' | b'-')
            && matches!(b.get(i.wrapping_sub(1)), Some(b'e' | b'E'))
            && !b
                .get(i.saturating_sub(3)..i)
                .is_some_and(|p| p.starts_with(b"0x") || p.starts_with(b"0X"));
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// A literal [`mask`] took out of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    /// Its value as sqlparser gives it: a number as written, a string without its quotes.
    pub(crate) value: String,
    /// A minus stands right before it: when unary (`= -5`), the query's constant is its negation.
    pub(crate) negatable: bool,
}

/// Marks standing for a masked number and a masked string in a shape; neither can occur in a Query's text.
const NUMBER_MARK: char = '\u{1}';
const STRING_MARK: char = '\u{2}';

/// Whether a number token is plain decimal digits with a fraction and exponent: PostgreSQL 16's `0x1F` and
/// `1_000` stay in the shape, as parsers may read them differently.
fn plain_number(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = digits(b);
    if b.get(i) == Some(&b'.') {
        i += 1 + digits(&b[i + 1..]);
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(&b[i..]);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len() && b.iter().any(u8::is_ascii_digit)
}

fn maskable(kind: Kind, text: &str) -> bool {
    match kind {
        Kind::String => !text.contains('\\'),
        _ => plain_number(text),
    }
}

/// Writes the shape of `sql` into `shape`: its text with every plain string and number replaced by a mark and
/// every run of spaces and comments by one space, and puts the literals taken out, in order, into `literals`. Two queries with the
/// same shape differ only in those constants, so they parse to the same tree. Strings with a backslash stay (parsers
/// disagree on them), as do numbers that are not plain decimals.
pub(crate) fn mask(sql: &str, shape: &mut String, literals: &mut Vec<Literal>) {
    shape.clear();
    literals.clear();
    // The last token that is not space or comment.
    let mut prev: Option<(Kind, u8)> = None;
    for t in tokens(sql) {
        let text = &sql[t.span.clone()];
        match t.kind {
            // Layout is not shape: a run of spaces and comments is one space, none at the end.
            Kind::Comment | Kind::Space => {
                if !shape.is_empty() && !shape.ends_with(' ') {
                    shape.push(' ');
                }
            }
            Kind::Number | Kind::String if maskable(t.kind, text) => {
                let value = if t.kind == Kind::String {
                    shape.push(STRING_MARK);
                    let inner = text
                        .get(1..text.len().saturating_sub(1))
                        .unwrap_or_default();
                    inner.replace("''", "'")
                } else {
                    shape.push(NUMBER_MARK);
                    text.to_owned()
                };
                let negatable = prev == Some((Kind::Punct, b'-'));
                literals.push(Literal { value, negatable });
            }
            _ => shape.push_str(text),
        }
        if !matches!(t.kind, Kind::Comment | Kind::Space) {
            prev = text.as_bytes().first().map(|&c| (t.kind, c));
        }
    }
    if shape.ends_with(' ') {
        shape.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        tokens(sql)
            .filter(|t| t.kind != Kind::Space)
            .map(|t| (t.kind, &sql[t.span]))
            .collect()
    }

    #[test]
    fn quoting_rules() {
        use Kind::*;
        assert_eq!(
            kinds("SELECT 'it''s', E'a\\'b', \"x\"\"y\", $q$ '; $q$, $$x$$, $2 FROM t1"),
            vec![
                (Word, "SELECT"),
                (String, "'it''s'"),
                (Punct, ","),
                (PrefixedString, "E'a\\'b'"),
                (Punct, ","),
                (QuotedName, "\"x\"\"y\""),
                (Punct, ","),
                (DollarString, "$q$ '; $q$"),
                (Punct, ","),
                (DollarString, "$$x$$"),
                (Punct, ","),
                (Param, "$2"),
                (Word, "FROM"),
                (Word, "t1"),
            ]
        );
        assert_eq!(
            kinds("a /* x /* y */ z */ b -- c\nd"),
            vec![
                (Word, "a"),
                (Comment, "/* x /* y */ z */"),
                (Word, "b"),
                (Comment, "-- c\n"),
                (Word, "d")
            ]
        );
        assert_eq!(
            kinds("1.5e-3 .5 0x1F 1_000 x-1 U&'a'"),
            vec![
                (Number, "1.5e-3"),
                (Number, ".5"),
                (Number, "0x1F"),
                (Number, "1_000"),
                (Word, "x"),
                (Punct, "-"),
                (Number, "1"),
                (PrefixedString, "U&'a'"),
            ]
        );
        // Unterminated runs end with the text rather than failing.
        assert_eq!(kinds("'abc"), vec![(Unterminated, "'abc")]);
        assert_eq!(kinds("'abc''"), vec![(Unterminated, "'abc''")]);
        assert_eq!(kinds("/* abc"), vec![(Unterminated, "/* abc")]);
        assert_eq!(kinds("$tag$ abc"), vec![(Unterminated, "$tag$ abc")]);
        assert_eq!(kinds("a$b"), vec![(Word, "a$b")]);
        // Spans fall on character boundaries whatever the text.
        assert_eq!(
            kinds("café ≥ 'é' $é$x$é$"),
            vec![
                (Word, "café"),
                (Word, "≥"),
                (String, "'é'"),
                (DollarString, "$é$x$é$")
            ]
        );
    }

    fn shape(sql: &str) -> (String, Vec<Literal>) {
        let (mut s, mut l) = (String::new(), Vec::new());
        mask(sql, &mut s, &mut l);
        (s, l)
    }

    #[test]
    fn queries_differing_in_constants_share_a_shape() {
        let (a, la) = shape("SELECT * FROM t WHERE id = 5 AND name = 'it''s' /* trace=1 */");
        let (b, lb) = shape("SELECT * FROM t WHERE id = 77 AND name = 'x' /* trace=2 */");
        assert_eq!(a, b);
        assert_eq!(la[1].value, "it's");
        assert_eq!(lb[0].value, "77");
        assert_ne!(
            shape("SELECT 1 FROM t WHERE id = $1").0,
            shape("SELECT 1 FROM t WHERE id = $2").0
        );
        assert_ne!(shape("SELECT E'a'").0, shape("SELECT E'b'").0);
        // What might parse differently stays in the shape.
        for (x, y) in [
            ("SELECT 'a", "SELECT 'b"),
            (r"SELECT 'a\'", r"SELECT 'b\'"),
            ("SELECT 1_000", "SELECT 2_000"),
            ("SELECT 0x1F", "SELECT 0x20"),
            ("SELECT 1e", "SELECT 2e"),
        ] {
            assert_ne!(shape(x).0, shape(y).0, "{x}");
        }
        assert_eq!(shape("SELECT 1.5e-3, '''', ''").1.len(), 3);
    }

    #[test]
    fn a_literal_after_a_minus_is_negatable() {
        let (_, l) = shape("SELECT a - 1, -2, (3) FROM t WHERE id = -4 OR x IN (1, - 5)");
        let neg: Vec<bool> = l.iter().map(|l| l.negatable).collect();
        assert_eq!(neg, vec![true, true, false, true, false, true]);
    }
}
