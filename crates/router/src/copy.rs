//! Splitting `COPY table FROM STDIN` (text and CSV formats) by the sharding key: the plan (what each shard runs,
//! where the key is among the copied columns, how rows are delimited and quoted) and a streaming row splitter
//! that cuts the client's CopyData bytes into whole rows and reads each row's key field. A header line is
//! consumed here, since every shard would otherwise skip its first row.

use sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};

use super::shard_key::KeySpec;

/// How the rows of a COPY are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub(crate) csv: bool,
    pub(crate) delimiter: u8,
    pub(crate) quote: u8,
    pub(crate) escape: u8,
    pub(crate) null: String,
    pub(crate) header: bool,
}

/// A COPY FROM STDIN into the sharded table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The statement each shard runs (without HEADER).
    pub shard_sql: String,
    /// The table as written, for looking up its column order when no column list is given.
    pub table: String,
    /// The column list (lower case), empty for all columns in table order.
    pub columns: Vec<String>,
    pub format: Format,
}

impl CopyPlan {
    /// Position of the key among the copied columns, given the table's columns when the list is empty.
    pub fn key_index(&self, spec: &KeySpec, table_columns: &[String]) -> Option<usize> {
        let cols = if self.columns.is_empty() {
            table_columns
        } else {
            &self.columns
        };
        cols.iter().position(|c| *c == spec.column)
    }
}

/// Plans a COPY statement: `Ok(None)` when it is not a COPY FROM STDIN into `spec`'s table, `Err` when it is one
/// Ocelot cannot split (binary format, options it does not know).
pub(crate) fn plan(stmt: &Statement, spec: &KeySpec) -> Result<Option<CopyPlan>, &'static str> {
    let Statement::Copy {
        source,
        to: false,
        target: CopyTarget::Stdin,
        options,
        legacy_options,
        ..
    } = stmt
    else {
        return Ok(None);
    };
    let CopySource::Table {
        table_name,
        columns,
    } = source
    else {
        return Ok(None);
    };
    let last = table_name
        .0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .unwrap_or_default();
    if spec.table != "*" && last != spec.table {
        return Ok(None);
    }
    let mut r = Options::default();
    let mut kept = Vec::new();
    for o in options {
        if r.option(o)? {
            kept.push(o.clone());
        }
    }
    let mut kept_legacy = Vec::new();
    for o in legacy_options {
        kept_legacy.extend(r.legacy(o)?);
    }
    let f = r.format();
    let shard_stmt = Statement::Copy {
        source: source.clone(),
        to: false,
        target: CopyTarget::Stdin,
        options: kept,
        legacy_options: kept_legacy,
        values: Vec::new(),
    };
    Ok(Some(CopyPlan {
        shard_sql: shard_stmt.to_string(),
        table: table_name.to_string(),
        columns: columns.iter().map(|c| c.value.to_lowercase()).collect(),
        format: f,
    }))
}

/// The format the options of a COPY say, read one option at a time.
#[derive(Default)]
struct Options {
    csv: bool,
    header: bool,
    quote: Option<u8>,
    delimiter: Option<u8>,
    null: Option<String>,
    escape: Option<u8>,
}

impl Options {
    /// Reads a (parenthesized) option; false for one the shards must not get (HEADER is consumed here).
    fn option(&mut self, o: &CopyOption) -> Result<bool, &'static str> {
        match o {
            CopyOption::Format(name) => match name.value.to_lowercase().as_str() {
                "csv" => self.csv = true,
                "text" => self.csv = false,
                _ => return Err("COPY in binary format"),
            },
            CopyOption::Delimiter(c) => self.delimiter = Some(ascii(*c)?),
            CopyOption::Null(s) => self.null = Some(s.clone()),
            CopyOption::Header(h) => {
                self.header = *h;
                return Ok(false);
            }
            CopyOption::Quote(c) => self.quote = Some(ascii(*c)?),
            CopyOption::Escape(c) => self.escape = Some(ascii(*c)?),
            CopyOption::ForceNotNull(_) | CopyOption::ForceNull(_) | CopyOption::Encoding(_) => {}
            CopyOption::Freeze(_) | CopyOption::ForceQuote(_) => {}
        }
        Ok(true)
    }

    /// Reads a pre-9.0 option; what the shards get of it.
    fn legacy(&mut self, o: &CopyLegacyOption) -> Result<Option<CopyLegacyOption>, &'static str> {
        match o {
            CopyLegacyOption::Binary => return Err("COPY in binary format"),
            CopyLegacyOption::Delimiter(c) => self.delimiter = Some(ascii(*c)?),
            CopyLegacyOption::Null(s) => self.null = Some(s.clone()),
            CopyLegacyOption::Header => {
                self.header = true;
                return Ok(None);
            }
            CopyLegacyOption::Csv(csv) => {
                self.csv = true;
                let mut inner = Vec::new();
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => {
                            self.header = true;
                            continue;
                        }
                        CopyLegacyCsvOption::Quote(q) => self.quote = Some(ascii(*q)?),
                        CopyLegacyCsvOption::Escape(e) => self.escape = Some(ascii(*e)?),
                        _ => {}
                    }
                    inner.push(c.clone());
                }
                return Ok(Some(CopyLegacyOption::Csv(inner)));
            }
            _ => return Err("COPY options other than PostgreSQL's"),
        }
        Ok(Some(o.clone()))
    }

    /// The format, PostgreSQL's defaults filled in for what the options left out.
    fn format(self) -> Format {
        let quote = self.quote.unwrap_or(b'"');
        Format {
            csv: self.csv,
            delimiter: self
                .delimiter
                .unwrap_or(if self.csv { b',' } else { b'\t' }),
            quote,
            escape: self.escape.unwrap_or(quote),
            null: self.null.unwrap_or_else(|| {
                if self.csv {
                    String::new()
                } else {
                    "\\N".into()
                }
            }),
            header: self.header,
        }
    }
}

fn ascii(c: char) -> Result<u8, &'static str> {
    u8::try_from(c)
        .ok()
        .filter(u8::is_ascii)
        .ok_or("a multi-byte COPY delimiter, quote or escape")
}

/// A row's key field.
#[derive(Debug, PartialEq, Eq)]
pub enum Key {
    Null,
    Value(String),
}

/// Cuts a stream of COPY data into rows.
#[derive(Debug)]
pub struct RowSplitter {
    format: Format,
    key: usize,
    /// Bytes of the row not finished yet.
    carry: Vec<u8>,
    header_pending: bool,
    /// The end-of-data marker `\.` was seen: the rest is ignored, as PostgreSQL does.
    ended: bool,
}

/// Bad COPY data (PostgreSQL's 22P04).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadCopyData(pub String);

impl RowSplitter {
    pub fn new(format: Format, key: usize) -> RowSplitter {
        RowSplitter {
            header_pending: format.header,
            format,
            key,
            carry: Vec::new(),
            ended: false,
        }
    }

    /// Feeds CopyData bytes; `emit(row, key)` gets each whole row (with its line end).
    pub fn feed(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(&[u8], Key) -> Result<(), BadCopyData>,
    ) -> Result<(), BadCopyData> {
        if self.ended {
            return Ok(());
        }
        self.carry.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = self.row_end(start) {
            let row = &self.carry[start..end];
            start = end;
            if std::mem::take(&mut self.header_pending) {
                continue;
            }
            if !self.format.csv && trim_eol(row) == b"\\." {
                self.ended = true;
                break;
            }
            let key = self.key_of(trim_eol(row))?;
            emit(row, key)?;
        }
        self.carry.drain(..start);
        Ok(())
    }

    /// At CopyDone: a last row without a line end.
    pub fn finish(
        &mut self,
        mut emit: impl FnMut(&[u8], Key) -> Result<(), BadCopyData>,
    ) -> Result<(), BadCopyData> {
        if self.ended || self.carry.is_empty() {
            return Ok(());
        }
        let row = std::mem::take(&mut self.carry);
        if std::mem::take(&mut self.header_pending) || (!self.format.csv && row == b"\\.") {
            return Ok(());
        }
        let mut line = row.clone();
        line.push(b'\n');
        emit(&line, self.key_of(&row)?)
    }

    /// The end (exclusive) of the row starting at `start`, if it is complete.
    fn row_end(&self, start: usize) -> Option<usize> {
        let buf = &self.carry[start..];
        if !self.format.csv {
            // Newlines inside text-format values are escaped, so the first one ends the row.
            return buf.iter().position(|&b| b == b'\n').map(|i| start + i + 1);
        }
        let (q, e) = (self.format.quote, self.format.escape);
        let mut quoted = false;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            if quoted {
                if b == e && e != q && buf.get(i + 1).is_some_and(|&n| n == q || n == e) {
                    i += 2;
                    continue;
                }
                if b == q {
                    if e == q && buf.get(i + 1) == Some(&q) {
                        i += 2;
                        continue;
                    }
                    if e == q && i + 1 == buf.len() {
                        // A doubled quote may be split across CopyData messages: wait for the next byte.
                        return None;
                    }
                    quoted = false;
                }
            } else if b == q {
                quoted = true;
            } else if b == b'\n' {
                return Some(start + i + 1);
            }
            i += 1;
        }
        None
    }

    fn key_of(&self, row: &[u8]) -> Result<Key, BadCopyData> {
        let raw = if self.format.csv {
            self.csv_field(row)
        } else {
            self.text_field(row)
        }
        .ok_or_else(|| {
            BadCopyData(format!(
                "missing data for the sharding key column (field {}) in a COPY row",
                self.key + 1
            ))
        })?;
        Ok(raw)
    }

    fn text_field(&self, row: &[u8]) -> Option<Key> {
        let d = self.format.delimiter;
        let mut field = 0;
        let mut i = 0;
        let mut start = 0;
        loop {
            let at_end = i == row.len();
            if at_end || row[i] == d {
                if field == self.key {
                    let raw = &row[start..i];
                    if raw == self.format.null.as_bytes() {
                        return Some(Key::Null);
                    }
                    return Some(Key::Value(unescape_text(raw)));
                }
                if at_end {
                    return None;
                }
                field += 1;
                start = i + 1;
            } else if row[i] == b'\\' {
                i += 1;
            }
            i += 1;
            if i > row.len() {
                i = row.len();
            }
        }
    }

    fn csv_field(&self, row: &[u8]) -> Option<Key> {
        let (d, q, e) = (self.format.delimiter, self.format.quote, self.format.escape);
        let mut field = 0;
        let mut i = 0;
        loop {
            // One field from i.
            let mut value = Vec::new();
            let mut was_quoted = false;
            let mut quoted = false;
            while i < row.len() {
                let b = row[i];
                if quoted {
                    if b == e && buf_next(row, i).is_some_and(|n| n == q || (n == e && e != q)) {
                        value.push(row[i + 1]);
                        i += 2;
                        continue;
                    }
                    if b == q {
                        quoted = false;
                    } else {
                        value.push(b);
                    }
                } else if b == q {
                    quoted = true;
                    was_quoted = true;
                } else if b == d {
                    break;
                } else {
                    value.push(b);
                }
                i += 1;
            }
            if field == self.key {
                if !was_quoted && value == self.format.null.as_bytes() {
                    return Some(Key::Null);
                }
                return Some(Key::Value(String::from_utf8_lossy(&value).into_owned()));
            }
            if i >= row.len() {
                return None;
            }
            i += 1;
            field += 1;
        }
    }
}

fn buf_next(row: &[u8], i: usize) -> Option<u8> {
    row.get(i + 1).copied()
}

fn trim_eol(row: &[u8]) -> &[u8] {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.strip_suffix(b"\r").unwrap_or(row)
}

/// Text-format backslash escapes (`\t`, `\n`, octal, `\x` hex, and a backslash before any other character).
fn unescape_text(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 == raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn plan_of(sql: &str) -> Result<Option<CopyPlan>, &'static str> {
        let s = KeySpec::parse("data.id").unwrap();
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, &format!("{sql};")).unwrap();
        plan(&stmts[0], &s)
    }

    fn split(format: Format, key: usize, pieces: &[&[u8]]) -> Vec<(String, Key)> {
        let mut s = RowSplitter::new(format, key);
        let mut out = Vec::new();
        for p in pieces {
            s.feed(p, |row, k| {
                out.push((String::from_utf8_lossy(row).into_owned(), k));
                Ok(())
            })
            .unwrap();
        }
        s.finish(|row, k| {
            out.push((String::from_utf8_lossy(row).into_owned(), k));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn plans_copy_statements() {
        let p = plan_of("COPY data (v, id) FROM STDIN WITH (FORMAT csv, HEADER true)")
            .unwrap()
            .unwrap();
        assert_eq!(p.shard_sql, "COPY data (v, id) FROM STDIN (FORMAT csv)");
        assert!(p.format.csv && p.format.header);
        assert_eq!(p.format.delimiter, b',');
        assert_eq!(p.columns, vec!["v", "id"]);
        let p = plan_of("COPY data FROM STDIN").unwrap().unwrap();
        assert_eq!(p.format.null, "\\N");
        assert!(p.columns.is_empty());
        assert_eq!(
            p.key_index(
                &KeySpec::parse("data.id").unwrap(),
                &["x".into(), "id".into()]
            ),
            Some(1)
        );
        assert_eq!(plan_of("COPY other FROM STDIN").unwrap(), None);
        assert_eq!(plan_of("COPY data TO STDOUT").unwrap(), None);
        assert!(plan_of("COPY data FROM STDIN WITH (FORMAT binary)").is_err());
    }

    #[test]
    fn splits_text_rows_across_messages() {
        let f = plan_of("COPY data FROM STDIN").unwrap().unwrap().format;
        let rows = split(
            f,
            1,
            &[b"a\t1\n", b"b\\tc\t-2\nno", b"ne\t\\N\n", b"x\\\\\t4"],
        );
        assert_eq!(
            rows,
            vec![
                ("a\t1\n".into(), Key::Value("1".into())),
                ("b\\tc\t-2\n".into(), Key::Value("-2".into())),
                ("none\t\\N\n".into(), Key::Null),
                ("x\\\\\t4\n".into(), Key::Value("4".into())),
            ]
        );
        assert_eq!(unescape_text(b"a\\tb\\101\\x41\\\\"), "a\tbAA\\");
        let f = plan_of("COPY data FROM STDIN").unwrap().unwrap().format;
        let rows = split(f, 0, &[b"1\n\\.\n2\n"]);
        assert_eq!(rows.len(), 1, "data after the end marker is ignored");
    }

    #[test]
    fn splits_csv_rows_with_quotes_and_header() {
        let f = plan_of("COPY data (v, id) FROM STDIN (FORMAT csv, HEADER)")
            .unwrap()
            .unwrap()
            .format;
        let rows = split(
            f,
            1,
            &[b"v,id\n\"a,\nb\",7\n\"q\"\"", b"\",\"8\"\n,9\n\"\",\n"],
        );
        assert_eq!(
            rows,
            vec![
                ("\"a,\nb\",7\n".into(), Key::Value("7".into())),
                ("\"q\"\"\",\"8\"\n".into(), Key::Value("8".into())),
                (",9\n".into(), Key::Value("9".into())),
                ("\"\",\n".into(), Key::Null),
            ]
        );
    }
}
