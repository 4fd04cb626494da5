//! What a `pgml.*` statement prepared over the extended protocol returns, known before it runs (a driver describes
//! a statement before binding it): the columns of train, deploy and the predict functions are fixed by PostgresML;
//! a per-row prediction returns the query's own columns, which only a server can describe, with the prediction in
//! its place.

use bytes::BytesMut;

use crate::serving::per_row::PerRow;
use crate::sql::call::Arg;
use crate::sql::params::{
    BOOL, FLOAT4, FLOAT4_ARRAY, FLOAT8, FLOAT8_ARRAY, INT2, INT4, INT8, NUMERIC, TEXT, VARCHAR,
};
use ocelot_protocol::codes::backend;
use ocelot_protocol::encode;
use ocelot_protocol::frame::Header;

/// The result of a statement Ocelot serves.
#[derive(Debug)]
pub enum Shape {
    /// Fixed columns (name, type).
    Columns(Vec<(String, u32)>),
    /// A per-row prediction: the columns come from describing `plan.sql` on a server.
    PerRow(PerRow),
    /// A per-row prediction Ocelot refuses (answered with the reason when it runs).
    Refused,
}

/// The shape of `sql` when Ocelot serves it, `None` when the statement belongs to the servers.
pub fn shape(sql: &str, types: &[u32]) -> Option<Shape> {
    if !crate::serving::serve::mentions_pgml(sql.as_bytes()) {
        return None;
    }
    if let Some(plan) = crate::serving::per_row::plan(sql) {
        return Some(match plan {
            Ok(p) => Shape::PerRow(p),
            Err(_) => Shape::Refused,
        });
    }
    let call = crate::serving::serve::whole_call(sql)?;
    let name = crate::serving::serve::output_alias(sql).unwrap_or_else(|| call.function.clone());
    let text = |n: &str| (n.to_owned(), TEXT);
    Some(Shape::Columns(match call.function.as_str() {
        "train" | "train_joint" => vec![
            text("project"),
            text("task"),
            text("algorithm"),
            ("deployed".into(), BOOL),
        ],
        "deploy" => vec![text("project"), text("strategy"), text("algorithm")],
        "load_dataset" => vec![text("table_name"), ("rows".into(), INT8)],
        "deploy_ab" => vec![
            text("project"),
            ("model_a".into(), INT8),
            ("model_b".into(), INT8),
            ("share".into(), FLOAT8),
        ],
        "end_ab" => vec![("end_ab".into(), BOOL)],
        "drift" => drift_columns(),
        "chunk" => vec![("chunk_index".into(), INT8), text("chunk")],
        "embed" => vec![(name, FLOAT4_ARRAY)],
        f if crate::serving::vector::is_vector_function(f) => {
            vec![(name, vector_result(f, sql))]
        }
        "predict" => vec![(name, FLOAT4)],
        "predict_batch" => {
            // By project: a set of real; by model id: one real[].
            let oid = if batch_by_id(&call.args, types) {
                FLOAT4_ARRAY
            } else {
                FLOAT4
            };
            vec![(name, oid)]
        }
        _ => vec![(name, FLOAT4_ARRAY)],
    }))
}

/// pgml.drift's columns.
fn drift_columns() -> Vec<(String, u32)> {
    let mut cols = vec![
        ("model_id".into(), INT8),
        ("feature".into(), TEXT),
        ("n".into(), INT8),
    ];
    for c in [
        "mean",
        "stddev",
        "missing_rate",
        "train_mean",
        "train_stddev",
        "train_missing_rate",
        "psi",
        "ks",
    ] {
        cols.push((c.into(), FLOAT8));
    }
    cols
}

/// The type a vector function `f` returns: an array for the element-wise ones, a scalar otherwise, in double
/// precision when the call's arrays are.
fn vector_result(f: &str, sql: &str) -> u32 {
    let double = sql.contains("float8") || sql.to_ascii_lowercase().contains("double precision");
    let array = matches!(
        f,
        "add"
            | "subtract"
            | "multiply"
            | "divide"
            | "normalize_l1"
            | "normalize_l2"
            | "normalize_max"
    );
    match (array, double) {
        (true, true) => FLOAT8_ARRAY,
        (true, false) => FLOAT4_ARRAY,
        (false, true) => FLOAT8,
        (false, false) => FLOAT4,
    }
}

/// Whether pgml.predict_batch names its model by id: a number, or a parameter bound as a bigint.
fn batch_by_id(args: &[(Option<String>, Arg)], types: &[u32]) -> bool {
    match args.first().map(|a| &a.1) {
        Some(Arg::Number(_)) => true,
        Some(Arg::Expr(e)) => e
            .strip_prefix('$')
            .and_then(|d| d.split("::").next())
            .and_then(|d| d.parse::<usize>().ok())
            .and_then(|p| p.checked_sub(1))
            .is_some_and(|i| types.get(i) == Some(&INT8)),
        _ => false,
    }
}

/// A text value of type `oid` in binary, for the types a `pgml.*` answer or a per-row query commonly returns.
fn binary(oid: u32, text: &str) -> Option<Vec<u8>> {
    Some(match oid {
        BOOL => vec![u8::from(text == "t")],
        INT2 => text.parse::<i16>().ok()?.to_be_bytes().to_vec(),
        INT4 => text.parse::<i32>().ok()?.to_be_bytes().to_vec(),
        INT8 => text.parse::<i64>().ok()?.to_be_bytes().to_vec(),
        FLOAT4 => text.parse::<f32>().ok()?.to_be_bytes().to_vec(),
        FLOAT8 => text.parse::<f64>().ok()?.to_be_bytes().to_vec(),
        NUMERIC => ocelot_router::binary::numeric_binary(text)?,
        TEXT | VARCHAR | 19 | 1042 => text.as_bytes().to_vec(),
        FLOAT4_ARRAY | FLOAT8_ARRAY => {
            let inner = text.strip_prefix('{')?.strip_suffix('}')?;
            let items: Vec<&str> = inner.split(',').filter(|s| !s.is_empty()).collect();
            let (el, size) = if oid == FLOAT4_ARRAY {
                (FLOAT4, 4)
            } else {
                (FLOAT8, 8)
            };
            let mut b = Vec::with_capacity(20 + items.len() * (4 + size));
            let dims: &[i32] = if items.is_empty() {
                &[0, 0, el as i32]
            } else {
                &[1, 0, el as i32, items.len() as i32, 1]
            };
            for w in dims {
                b.extend_from_slice(&w.to_be_bytes());
            }
            for item in items {
                b.extend_from_slice(&(size as i32).to_be_bytes());
                b.extend_from_slice(&binary(el, item)?);
            }
            b
        }
        _ => return None,
    })
}

/// The format code of column `i` under a Bind's result formats.
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats {
        [] => 0,
        [one] => *one,
        all => all.get(i).copied().unwrap_or(0),
    }
}

/// Rewrites a text-format answer (RowDescription, DataRows, CommandComplete, or an ErrorResponse) as an Execute
/// answers with the Bind's result `formats`: the RowDescription only when the portal was described, values in
/// binary where asked. A column Ocelot cannot put in binary is an error (0A000) naming it.
pub fn in_formats(
    answer: &[u8],
    formats: &[i16],
    describe: bool,
    out: &mut BytesMut,
) -> Result<(), String> {
    let mut oids: Vec<u32> = Vec::new();
    let mut at = 0;
    while let Ok(Some(h)) = Header::parse(&answer[at..], u32::MAX) {
        let msg = &answer[at..(at + h.total()).min(answer.len())];
        at += h.total();
        match h.code {
            backend::ROW_DESCRIPTION => {
                let fields =
                    ocelot_protocol::rows::fields(msg).ok_or("unexpected result description")?;
                oids = fields.iter().map(|f| f.oid).collect();
                if describe {
                    let cols: Vec<(&str, u32, i16, i16)> = fields
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (f.name.as_str(), f.oid, -1, format_of(formats, i)))
                        .collect();
                    encode::row_description_formats(out, &cols);
                }
            }
            backend::DATA_ROW if formats.contains(&1) => {
                let cells = ocelot_protocol::rows::cells(msg).ok_or("unexpected row")?;
                let mut values = Vec::with_capacity(cells.len());
                for (i, cell) in cells.iter().enumerate() {
                    values.push(match cell {
                        None => None,
                        Some(v) if format_of(formats, i) == 1 => {
                            let oid = oids.get(i).copied().unwrap_or(0);
                            let text = std::str::from_utf8(v).unwrap_or_default();
                            Some(binary(oid, text).ok_or_else(|| {
                                format!("Ocelot cannot send column {} (type {oid}) of this pgml query in binary; ask for text results", i + 1)
                            })?)
                        }
                        Some(v) => Some(v.to_vec()),
                    });
                }
                encode::data_row_raw(out, &values);
            }
            _ => out.extend_from_slice(msg),
        }
        if at >= answer.len() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_the_calls() {
        let cols = |sql: &str, types: &[u32]| match shape(sql, types) {
            Some(Shape::Columns(c)) => c,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(
            cols(
                "SELECT pgml.predict($1, $2) AS score",
                &[TEXT, FLOAT4_ARRAY]
            ),
            vec![("score".to_owned(), FLOAT4)]
        );
        assert_eq!(
            cols("SELECT pgml.predict_proba($1, $2)", &[])[0].1,
            FLOAT4_ARRAY
        );
        assert_eq!(
            cols("SELECT pgml.predict_batch($1, $2)", &[INT8, FLOAT4_ARRAY])[0].1,
            FLOAT4_ARRAY
        );
        assert_eq!(
            cols("SELECT pgml.predict_batch('p', $1)", &[FLOAT4_ARRAY])[0].1,
            FLOAT4
        );
        assert_eq!(
            cols("SELECT * FROM pgml.train($1, $2, $3, $4)", &[]).len(),
            4
        );
        assert!(matches!(
            shape(
                "SELECT id, pgml.predict('p', ARRAY[a]) FROM t WHERE id = $1",
                &[]
            ),
            Some(Shape::PerRow(_))
        ));
        assert!(shape("SELECT $1", &[]).is_none());
        assert!(shape("SELECT pgml.version()", &[]).is_none());
    }

    #[test]
    fn answers_in_binary_where_asked() {
        let mut answer = BytesMut::new();
        encode::row_description_typed(&mut answer, &[("id", INT8, 8), ("p", FLOAT4_ARRAY, -1)]);
        encode::data_row_text(&mut answer, &["7", "{1.5,-2}"]);
        encode::command_complete(&mut answer, "SELECT 1");
        let mut out = BytesMut::new();
        in_formats(&answer, &[1], false, &mut out).unwrap();
        let h = Header::parse(&out, u32::MAX).unwrap().unwrap();
        assert_eq!(h.code, backend::DATA_ROW);
        let cells = ocelot_protocol::rows::cells(&out[..h.total()]).unwrap();
        assert_eq!(cells[0], Some(&7i64.to_be_bytes()[..]));
        let arr = cells[1].unwrap();
        assert_eq!(arr.len(), 20 + 2 * 8);
        assert_eq!(&arr[arr.len() - 4..], &(-2.0f32).to_be_bytes());
        // Text formats pass the rows unchanged; a described portal gets its RowDescription with the formats.
        let mut out = BytesMut::new();
        in_formats(&answer, &[0, 1], true, &mut out).unwrap();
        assert_eq!(out[0], backend::ROW_DESCRIPTION);
        let mut odd = BytesMut::new();
        encode::row_description_typed(&mut odd, &[("t", 1184, 8)]);
        encode::data_row_text(&mut odd, &["2020-01-01 00:00:00+00"]);
        assert!(in_formats(&odd, &[1], false, &mut BytesMut::new()).is_err());
        assert!(in_formats(&odd, &[0], false, &mut BytesMut::new()).is_ok());
    }
}
