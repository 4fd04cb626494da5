//! Combining per-shard aggregate values (text format) into the value one server holding all rows would return:
//! count and sum add up, min and max compare, bool_and/bool_or combine, NULLs (a shard with no rows) are skipped.
//! Integer and numeric values are added and compared exactly as scaled 128-bit integers; types Ocelot cannot
//! combine exactly (floating point, text ordering under a collation, ...) are refused, never approximated.

use std::cmp::Ordering;

use super::fanout::Aggregate;

const INT2: u32 = 21;
const INT4: u32 = 23;
const INT8: u32 = 20;
const NUMERIC: u32 = 1700;
const BOOL: u32 = 16;

/// `"-12.340"` as (-12340, 3).
fn parse_decimal(s: &str) -> Option<(i128, u32)> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v.checked_mul(10)?.checked_add((b - b'0') as i128)?;
    }
    Some((if neg { -v } else { v }, frac.len() as u32))
}

fn rescale(v: i128, from: u32, to: u32) -> Option<i128> {
    v.checked_mul(10i128.checked_pow(to - from)?)
}

fn format_decimal(v: i128, scale: u32) -> String {
    if scale == 0 {
        return v.to_string();
    }
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

fn add(a: &str, b: &str) -> Option<String> {
    let ((x, sx), (y, sy)) = (parse_decimal(a)?, parse_decimal(b)?);
    let s = sx.max(sy);
    let sum = rescale(x, sx, s)?.checked_add(rescale(y, sy, s)?)?;
    Some(format_decimal(sum, s))
}

fn cmp(a: &str, b: &str) -> Option<Ordering> {
    let ((x, sx), (y, sy)) = (parse_decimal(a)?, parse_decimal(b)?);
    let s = sx.max(sy);
    Some(rescale(x, sx, s)?.cmp(&rescale(y, sy, s)?))
}

const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;

/// Whether Ocelot orders values of type `oid` exactly as PostgreSQL does (text order depends on collation, so
/// text is not among them).
pub fn sortable(oid: u32) -> bool {
    matches!(
        oid,
        INT2 | INT4 | INT8 | NUMERIC | FLOAT4 | FLOAT8 | BOOL | DATE | TIMESTAMP
    )
}

fn float(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// Orders two non-NULL text values of a [`sortable`] type as PostgreSQL does.
pub fn compare(oid: u32, a: &str, b: &str) -> Ordering {
    match oid {
        INT2 | INT4 | INT8 | NUMERIC => match (a == "NaN", b == "NaN") {
            // PostgreSQL sorts numeric NaN above every number.
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => cmp(a, b).unwrap_or_else(|| a.len().cmp(&b.len()).then(a.cmp(b))),
        },
        FLOAT4 | FLOAT8 => {
            let (x, y) = (float(a), float(b));
            match (x.is_nan(), y.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            }
        }
        // ISO dates and timestamps compare as text, years 1-9999 AD; 'f' < 't' for booleans.
        _ => a.cmp(b),
    }
}

/// Combines one aggregate column of type `oid` from every shard.
pub fn combine(
    agg: Aggregate,
    oid: u32,
    values: &[Option<&str>],
) -> Result<Option<String>, String> {
    let present: Vec<&str> = values.iter().flatten().copied().collect();
    let exact_number = matches!(oid, INT2 | INT4 | INT8 | NUMERIC);
    let refuse = |what: &str| {
        Err(format!(
            "{what} of a column of type oid {oid} across shards"
        ))
    };
    match agg {
        Aggregate::Count | Aggregate::Sum => {
            if !exact_number {
                return refuse("sum");
            }
            if present.is_empty() {
                return Ok((agg == Aggregate::Count).then(|| "0".to_owned()));
            }
            let mut total = present[0].to_owned();
            for v in &present[1..] {
                total = add(&total, v)
                    .ok_or_else(|| "a sum too large to combine exactly".to_owned())?;
            }
            Ok(Some(total))
        }
        Aggregate::Min | Aggregate::Max => {
            if !exact_number {
                return refuse("min/max");
            }
            let mut best: Option<&str> = None;
            for v in present {
                let better = match best {
                    None => true,
                    Some(b) => {
                        let o = cmp(v, b).ok_or_else(|| "a value out of range".to_owned())?;
                        (agg == Aggregate::Min && o == Ordering::Less)
                            || (agg == Aggregate::Max && o == Ordering::Greater)
                    }
                };
                if better {
                    best = Some(v);
                }
            }
            Ok(best.map(str::to_owned))
        }
        Aggregate::BoolAnd | Aggregate::BoolOr => {
            if oid != BOOL {
                return refuse("bool_and/bool_or");
            }
            if present.is_empty() {
                return Ok(None);
            }
            let any_true = present.contains(&"t");
            let all_true = present.iter().all(|v| *v == "t");
            let r = if agg == Aggregate::BoolAnd {
                all_true
            } else {
                any_true
            };
            Ok(Some(if r { "t" } else { "f" }.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_postgresql() {
        assert_eq!(compare(NUMERIC, "10", "9.5"), Ordering::Greater);
        assert_eq!(compare(INT8, "-3", "2"), Ordering::Less);
        assert_eq!(compare(NUMERIC, "NaN", "1e3"), Ordering::Greater);
        assert_eq!(compare(FLOAT8, "NaN", "Infinity"), Ordering::Greater);
        assert_eq!(compare(FLOAT8, "-Infinity", "-1e300"), Ordering::Less);
        assert_eq!(compare(BOOL, "f", "t"), Ordering::Less);
        assert_eq!(compare(DATE, "2024-01-02", "2023-12-31"), Ordering::Greater);
        assert!(!sortable(25));
    }

    #[test]
    fn combines_exactly() {
        assert_eq!(
            combine(Aggregate::Count, INT8, &[Some("3"), Some("0"), Some("4")]),
            Ok(Some("7".into()))
        );
        assert_eq!(combine(Aggregate::Count, INT8, &[]), Ok(Some("0".into())));
        assert_eq!(
            combine(
                Aggregate::Sum,
                NUMERIC,
                &[Some("1.50"), None, Some("-0.125")]
            ),
            Ok(Some("1.375".into()))
        );
        assert_eq!(
            combine(Aggregate::Sum, NUMERIC, &[Some("-0.5"), Some("0.25")]),
            Ok(Some("-0.25".into()))
        );
        assert_eq!(combine(Aggregate::Sum, INT8, &[None, None]), Ok(None));
        assert_eq!(
            combine(Aggregate::Min, INT4, &[Some("5"), Some("-7"), None]),
            Ok(Some("-7".into()))
        );
        assert_eq!(
            combine(Aggregate::Max, NUMERIC, &[Some("2.5"), Some("2.49")]),
            Ok(Some("2.5".into()))
        );
        assert_eq!(
            combine(Aggregate::BoolOr, BOOL, &[Some("f"), None, Some("t")]),
            Ok(Some("t".into()))
        );
        assert_eq!(
            combine(Aggregate::BoolAnd, BOOL, &[Some("f"), Some("t")]),
            Ok(Some("f".into()))
        );
        assert!(combine(Aggregate::Sum, 701, &[Some("1.5")]).is_err());
        assert!(combine(Aggregate::Max, 25, &[Some("a")]).is_err());
        assert!(combine(
            Aggregate::Sum,
            NUMERIC,
            &[Some("170141183460469231731687303715884105727"), Some("1")]
        )
        .is_err());
    }
}
