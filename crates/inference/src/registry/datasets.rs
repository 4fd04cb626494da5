//! `pgml.load_dataset(source)`: the scikit-learn toy datasets PostgresML's examples train on, created as PostgresML
//! creates them (`pgml.<name>` dropped, with what depends on it, and made again, same columns, types and row order). The rows ship inside
//! the binary (`data/datasets/*.csv`, written by `scripts/make-datasets.py` from scikit-learn), so nothing is
//! downloaded. On a sharded pool the table is made on every shard and the rows go to the first, so training
//! (which reads every shard) sees each row once.

use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::Backend;
use crate::registry::models::{refuse, Refusal};
use crate::registry::train::text_arg;
use crate::sql::call::{bind, Arg, Call};
use crate::sql::params::{INT8, TEXT};
use ocelot_protocol::encode;

/// A dataset: its name, its columns as `CREATE TABLE` declares them, and its rows as PostgreSQL CSV.
struct Dataset {
    name: &'static str,
    columns: &'static str,
    csv: &'static str,
}

const DATASETS: &[Dataset] = &[
    Dataset {
        name: "iris",
        columns: "sepal_length FLOAT4, sepal_width FLOAT4, petal_length FLOAT4, petal_width FLOAT4, target INT4",
        csv: include_str!("../../../../data/datasets/iris.csv"),
    },
    Dataset {
        name: "diabetes",
        columns: "age FLOAT4, sex FLOAT4, bmi FLOAT4, bp FLOAT4, s1 FLOAT4, s2 FLOAT4, s3 FLOAT4, s4 FLOAT4, \
                  s5 FLOAT4, s6 FLOAT4, target FLOAT4",
        csv: include_str!("../../../../data/datasets/diabetes.csv"),
    },
    Dataset {
        name: "digits",
        columns: "image SMALLINT[][], target SMALLINT",
        csv: include_str!("../../../../data/datasets/digits.csv"),
    },
    Dataset {
        name: "breast_cancer",
        columns: "\"mean radius\" FLOAT4, \"mean texture\" FLOAT4, \"mean perimeter\" FLOAT4, \"mean area\" FLOAT4, \
                  \"mean smoothness\" FLOAT4, \"mean compactness\" FLOAT4, \"mean concavity\" FLOAT4, \
                  \"mean concave points\" FLOAT4, \"mean symmetry\" FLOAT4, \"mean fractal dimension\" FLOAT4, \
                  \"radius error\" FLOAT4, \"texture error\" FLOAT4, \"perimeter error\" FLOAT4, \
                  \"area error\" FLOAT4, \"smoothness error\" FLOAT4, \"compactness error\" FLOAT4, \
                  \"concavity error\" FLOAT4, \"concave points error\" FLOAT4, \"symmetry error\" FLOAT4, \
                  \"fractal dimension error\" FLOAT4, \"worst radius\" FLOAT4, \"worst texture\" FLOAT4, \
                  \"worst perimeter\" FLOAT4, \"worst area\" FLOAT4, \"worst smoothness\" FLOAT4, \
                  \"worst compactness\" FLOAT4, \"worst concavity\" FLOAT4, \"worst concave points\" FLOAT4, \
                  \"worst symmetry\" FLOAT4, \"worst fractal dimension\" FLOAT4, \"malignant\" BOOLEAN",
        csv: include_str!("../../../../data/datasets/breast_cancer.csv"),
    },
    Dataset {
        name: "linnerud",
        columns: "chins FLOAT4, situps FLOAT4, jumps FLOAT4, weight FLOAT4, waist FLOAT4, pulse FLOAT4",
        csv: include_str!("../../../../data/datasets/linnerud.csv"),
    },
    Dataset {
        name: "wine",
        columns: "alcohol FLOAT4, malic_acid FLOAT4, ash FLOAT4, alcalinity_of_ash FLOAT4, magnesium FLOAT4, \
                  total_phenols FLOAT4, flavanoids FLOAT4, nonflavanoid_phenols FLOAT4, proanthocyanins FLOAT4, \
                  color_intensity FLOAT4, hue FLOAT4, \"od280/od315_of_diluted_wines\" FLOAT4, proline FLOAT4, \
                  target INT4",
        csv: include_str!("../../../../data/datasets/wine.csv"),
    },
];

/// The first `limit` rows of `csv` (all of them for `None`), and how many that is.
fn first_rows(csv: &str, limit: Option<u64>) -> (&str, u64) {
    let mut end = 0;
    let mut n = 0;
    for line in csv.split_inclusive('\n') {
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        end += line.len();
        n += 1;
    }
    (&csv[..end], n)
}

/// Serves `pgml.load_dataset(source, subset, limit, kwargs)`, answering `(table_name, rows)`.
pub(crate) async fn load_dataset(
    pool: &Arc<dyn Backend>,
    call: &Call,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let args = bind(
        call,
        &[
            ("source", None),
            ("subset", Some(Arg::Null)),
            ("limit", Some(Arg::Null)),
            ("kwargs", Some(Arg::Text("{}".into()))),
        ],
    )?;
    let source =
        text_arg(&args, "source").ok_or_else(|| refuse("22004", "source must not be NULL"))?;
    let limit = match args.get("limit") {
        None | Some(Arg::Null) => None,
        Some(a) => Some(
            a.as_f64()
                .filter(|l| *l >= 0.0 && l.fract() == 0.0)
                .ok_or_else(|| refuse("22023", "limit must be a whole number of rows"))?
                as u64,
        ),
    };
    let Some(set) = DATASETS.iter().find(|d| d.name == source) else {
        let known: Vec<_> = DATASETS.iter().map(|d| d.name).collect();
        return Err(refuse(
            "0A000",
            format!(
                "pgml.load_dataset: Ocelot carries scikit-learn's toy datasets ({}); \"{source}\" would be a \
                 Hugging Face dataset, which needs PostgresML's Python runtime and a download: load it into a \
                 table yourself",
                known.join(", ")
            ),
        ));
    };
    let table = format!("pgml.{}", set.name);
    let (rows, n) = first_rows(set.csv, limit);
    let create = format!(
        "CREATE SCHEMA IF NOT EXISTS pgml; DROP TABLE IF EXISTS {table} CASCADE; CREATE TABLE {table} ({})",
        set.columns
    );
    for shard in 0..pool.shard_count() {
        let mut conn = pool.conn(shard, crate::backend::Which::Primary).await?;
        conn.run(&create).await?;
        if shard == 0 {
            conn.copy_in(
                &format!("COPY {table} FROM STDIN (FORMAT csv)"),
                rows.as_bytes(),
            )
            .await?;
        }
    }
    encode::row_description_typed(out, &[("table_name", TEXT, -1), ("rows", INT8, 8)]);
    encode::data_row_text(out, &[&table, &n.to_string()]);
    encode::command_complete(out, "SELECT 1");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dataset_has_scikit_learns_row_count_and_a_limit_keeps_the_first_rows() {
        let rows = |name: &str| {
            let d = DATASETS.iter().find(|d| d.name == name).unwrap();
            first_rows(d.csv, None).1
        };
        let counts: Vec<_> = [
            "iris",
            "diabetes",
            "digits",
            "breast_cancer",
            "linnerud",
            "wine",
        ]
        .iter()
        .map(|n| rows(n))
        .collect();
        assert_eq!(counts, [150, 442, 1797, 569, 20, 178]);
        let iris = DATASETS[0].csv;
        assert_eq!(
            first_rows(iris, Some(2)),
            ("5.1,3.5,1.4,0.2,0\n4.9,3,1.4,0.2,0\n", 2)
        );
        assert_eq!(first_rows(iris, Some(0)).1, 0);
    }
}
