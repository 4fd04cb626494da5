//! A result set the console builds in memory and writes as RowDescription, DataRows and CommandComplete. Column
//! types follow PgCat: names are text, counters bigint.

use bytes::BytesMut;

use crate::protocol::encode;

const TEXT: u32 = 25;
const INT8: u32 = 20;

/// Column kinds of console results.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Text(&'static str),
    Int(&'static str),
}

/// One result set.
pub(crate) struct Table {
    columns: Vec<Col>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub(crate) fn new(columns: &[Col]) -> Self {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of values already in text form, one per column.
    pub(crate) fn row(&mut self, values: Vec<String>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values.into_iter().map(Some).collect());
    }

    /// The column names, and whether each is a number.
    pub(crate) fn columns(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.columns.iter().map(|c| match c {
            Col::Text(n) => (*n, false),
            Col::Int(n) => (*n, true),
        })
    }

    pub(crate) fn rows(&self) -> &[Vec<Option<String>>] {
        &self.rows
    }

    /// The rows whose `column` is `value`.
    pub(crate) fn only(&self, column: &str, value: &str) -> Table {
        let i = self.columns().position(|(n, _)| n == column);
        Table {
            columns: self.columns.clone(),
            rows: self
                .rows
                .iter()
                .filter(|r| i.is_some_and(|i| r[i].as_deref() == Some(value)))
                .cloned()
                .collect(),
        }
    }

    /// Writes the result set, ending with CommandComplete `tag`.
    pub(crate) fn write(&self, out: &mut BytesMut, tag: &str) {
        let cols: Vec<(&str, u32, i16)> = self
            .columns
            .iter()
            .map(|c| match c {
                Col::Text(n) => (*n, TEXT, -1),
                Col::Int(n) => (*n, INT8, 8),
            })
            .collect();
        encode::row_description_typed(out, &cols);
        for r in &self.rows {
            encode::data_row_opt(out, r);
        }
        encode::command_complete(out, tag);
    }
}

/// Shorthand for a text value.
pub(crate) fn t(s: impl ToString) -> String {
    s.to_string()
}
