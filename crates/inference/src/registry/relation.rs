//! Reading a training relation through the pool (from every shard, in parallel): every column but the label is a
//! feature (numbers, booleans, and arrays of them, one feature per element), NULL is NaN for the preprocessor to
//! impute or refuse, and the label must not be NULL.

use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::join_all;

use crate::backend::Backend;
use crate::registry::models::{refuse, sqlstate_of, Refusal};
use ocelot_protocol::codes::sqlstate;
use ocelot_protocol::encode;
use ocelot_protocol::rows::{cells, fields, split_rows};
use ocelot_router::session_sql::quote_name;

/// A relation name as SQL: each dot-separated part quoted.
fn relation_sql(name: &str) -> String {
    name.split('.')
        .map(|p| quote_name(p.trim_matches('"')))
        .collect::<Vec<_>>()
        .join(".")
}

const NUMERIC_TYPES: &[u32] = &[16, 20, 21, 23, 700, 701, 1700];
/// Arrays of those (bool[], int8[], int2[], int4[], float4[], float8[], numeric[]): each element is a feature.
const NUMERIC_ARRAYS: &[u32] = &[1000, 1016, 1005, 1007, 1021, 1022, 1231];

/// One cell as a number: booleans are 0/1, NULL is NaN (missing, for the preprocessor to impute or refuse).
fn number(cell: Option<&[u8]>, column: &str) -> Result<f64, Refusal> {
    let Some(b) = cell else {
        return Ok(f64::NAN);
    };
    let t = std::str::from_utf8(b).unwrap_or_default();
    match t {
        "t" => Ok(1.0),
        "f" => Ok(0.0),
        "NULL" => Ok(f64::NAN),
        _ => t.parse::<f64>().map_err(|_| {
            refuse(
                "22023",
                format!("value {t:?} of \"{column}\" is not a number"),
            )
        }),
    }
}

/// The elements of a numeric array in PostgreSQL's text form, of any number of dimensions, in row-major order
/// (`{{1,2},{3,4}}` is 1, 2, 3, 4), as PostgresML flattens an image column. A lower-bound decoration
/// (`[0:1]={...}`) is skipped.
pub(crate) fn array_items(text: &str) -> impl Iterator<Item = &str> {
    let body = match text.strip_prefix('[') {
        Some(_) => text.split_once('=').map_or(text, |(_, b)| b),
        None => text,
    };
    body.split(['{', '}', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The features and label (when `y_column` is named) of one shard's answer, appended to `x` and `y`; returns
/// the feature names (`column` or `column[i]` for array elements).
fn rows_of(
    answer: &ocelot_protocol::rows::Answer,
    relation: &str,
    y_column: Option<&str>,
    x: &mut Vec<Vec<f64>>,
    y: &mut Vec<f64>,
) -> Result<Option<Vec<String>>, Refusal> {
    let Some(rd) = answer.row_description.as_ref() else {
        return Ok(None);
    };
    let cols = fields(rd)
        .ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected result description"))?;
    let y_idx = match y_column {
        None => None,
        Some(y_column) => Some(
            cols.iter()
                .position(|c| c.name == y_column.to_lowercase())
                .ok_or_else(|| {
                    refuse(
                "42703",
                format!("Column `{y_column}` not found. Did you pass the correct `y_column_name`?"),
            )
                })?,
        ),
    };
    for (i, c) in cols.iter().enumerate() {
        let array_ok = Some(i) != y_idx && NUMERIC_ARRAYS.contains(&c.oid);
        if !NUMERIC_TYPES.contains(&c.oid) && !array_ok {
            return Err(refuse(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!("column \"{}\" of {relation} is not numeric (type oid {}); Ocelot trains on numeric and boolean columns and arrays of them", c.name, c.oid),
            ));
        }
    }
    let mut names: Option<Vec<String>> = None;
    for raw in split_rows(&answer.rows) {
        let row = cells(raw).ok_or_else(|| refuse(sqlstate::INTERNAL_ERROR, "unexpected row"))?;
        let mut features = Vec::with_capacity(row.len());
        let mut row_names = Vec::new();
        for (i, cell) in row.iter().enumerate() {
            let name = &cols[i].name;
            if Some(i) == y_idx {
                let v = number(*cell, name)?;
                if v.is_nan() {
                    return Err(refuse("22023", format!("The training data labels in \"{name}\" contain NULL values. Consider filtering them out.")));
                }
                y.push(v);
            } else if NUMERIC_ARRAYS.contains(&cols[i].oid) {
                let text = cell
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                for (k, item) in array_items(&text).enumerate() {
                    features.push(number(Some(item.as_bytes()), name)?);
                    if names.is_none() {
                        row_names.push(format!("{name}[{}]", k + 1));
                    }
                }
            } else {
                features.push(number(*cell, name)?);
                if names.is_none() {
                    row_names.push(name.clone());
                }
            }
        }
        match &names {
            None => names = Some(row_names),
            Some(n) if n.len() != features.len() => {
                return Err(refuse(
                    "22023",
                    format!("the rows of {relation} have different numbers of features ({} and {}): arrays used as features must all have the same length", n.len(), features.len()),
                ))
            }
            Some(_) => {}
        }
        x.push(features);
    }
    Ok(names)
}

/// Reads `relation` (from every shard, in parallel): the features (every column but `y_column`; numbers,
/// booleans and arrays of them) and the label when there is one.
pub(crate) async fn read_relation(
    pool: &Arc<dyn Backend>,
    relation: &str,
    y_column: Option<&str>,
    order: &str,
) -> Result<(Vec<Vec<f64>>, Vec<String>, Vec<f64>), Refusal> {
    let sql = format!("SELECT * FROM {}{order}", relation_sql(relation));
    let mut q = BytesMut::new();
    encode::query(&mut q, &sql);
    let reads = join_all((0..pool.shard_count()).map(|shard| {
        let q = q.clone();
        async move {
            let mut conn = pool.conn(shard, crate::backend::Which::Any).await?;
            conn.exec(&q).await
        }
    }))
    .await;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for answer in reads {
        let answer = answer?;
        if let Some(e) = answer.error {
            let f = ocelot_protocol::decode::error_fields(&e[5..]).unwrap_or_default();
            return Err(Refusal {
                code: sqlstate_of(&f.code),
                message: f.message,
            });
        }
        if let Some(n) = rows_of(&answer, relation, y_column, &mut features, &mut labels)? {
            if !names.is_empty() && n.len() != names.len() {
                return Err(refuse(
                    "22023",
                    format!("the shards of {relation} have different numbers of features"),
                ));
            }
            names = n;
        }
    }
    if features.is_empty() {
        return Err(refuse(
            "22023",
            format!("relation {relation} has no rows to train on"),
        ));
    }
    Ok((features, names, labels))
}

#[cfg(test)]
mod tests {
    use super::array_items;

    #[test]
    fn arrays_of_any_dimension_are_flattened_in_row_major_order() {
        let items = |t| array_items(t).collect::<Vec<_>>();
        assert_eq!(items("{1,2.5,NULL}"), ["1", "2.5", "NULL"]);
        assert_eq!(items("{{0,1},{2,3}}"), ["0", "1", "2", "3"]);
        assert_eq!(items("{{{1}},{{2}}}"), ["1", "2"]);
        assert_eq!(items("[0:1]={7,8}"), ["7", "8"]);
        assert!(items("{}").is_empty());
    }
}
