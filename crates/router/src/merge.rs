//! Combining per-shard aggregate values (text format) into the value one server holding all rows would return:
//! count and sum add up, min and max compare, bool_and/bool_or combine, NULLs (a shard with no rows) are skipped.
//! Integer and numeric values are added and compared exactly as scaled 128-bit integers; types Ocelot cannot
//! combine exactly (floating point, text ordering under a collation, ...) are refused, never approximated.
//! [`Merge`] names which way a fan-out's answers are combined.

use std::cmp::Ordering;

use std::borrow::Cow;

use super::fanout::{Aggregate, Ordered};
use super::grouped::Grouped;

/// How the answers of several shards to one query are merged.
#[derive(Debug, Clone)]
pub enum Merge {
    /// Rows concatenated.
    Rows,
    /// Partial aggregates per group, combined.
    Grouped(Grouped),
    /// Rows merged in ORDER BY order, then OFFSET and LIMIT.
    Ordered(Ordered),
    /// A write on several shards: affected row counts summed, RETURNING rows concatenated.
    Write,
}

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
const TIME: u32 = 1083;
const TIMESTAMP: u32 = 1114;
const UUID: u32 = 2950;
const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;
const NAME: u32 = 19;

/// Whether values of type `oid` are text whose order depends on a collation (Ocelot merges them only under the
/// byte-order collations C and POSIX).
pub fn collatable(oid: u32) -> bool {
    matches!(oid, TEXT | VARCHAR)
}

/// Whether Ocelot orders values of type `oid` exactly as PostgreSQL does without knowing a collation.
pub(crate) fn sortable(oid: u32) -> bool {
    matches!(
        oid,
        INT2 | INT4
            | INT8
            | NUMERIC
            | FLOAT4
            | FLOAT8
            | BOOL
            | DATE
            | TIME
            | TIMESTAMP
            | UUID
            | NAME
    )
}

/// Whether Ocelot can order values of type `oid`, given whether text sorts by bytes here.
pub fn orderable(oid: u32, bytewise_text: bool) -> bool {
    sortable(oid) || (collatable(oid) && bytewise_text)
}

fn float(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// Orders ISO dates and timestamps: -infinity, BC years (later years first), AD years, infinity.
fn compare_datetime(a: &str, b: &str) -> Ordering {
    fn era(s: &str) -> (u8, &str) {
        match s {
            "-infinity" => (0, s),
            "infinity" => (3, s),
            _ => match s.strip_suffix(" BC") {
                Some(rest) => (1, rest),
                None => (2, s),
            },
        }
    }
    let ((ea, ra), (eb, rb)) = (era(a), era(b));
    ea.cmp(&eb).then_with(|| {
        if ea == 1 {
            // 0044-03-15 BC is before 0010-01-01 BC: years count down, the rest counts up.
            let (ya, ta) = ra.split_once('-').unwrap_or((ra, ""));
            let (yb, tb) = rb.split_once('-').unwrap_or((rb, ""));
            yb.len().cmp(&ya.len()).then(yb.cmp(ya)).then(ta.cmp(tb))
        } else {
            // Years past 9999 have more digits.
            let ya = ra.find('-').unwrap_or(ra.len());
            let yb = rb.find('-').unwrap_or(rb.len());
            ya.cmp(&yb).then(ra.cmp(rb))
        }
    })
}

/// Orders two non-NULL text values of a [`sortable`] (or, under a byte-order collation, [`collatable`]) type as
/// PostgreSQL does.
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
        DATE | TIMESTAMP => compare_datetime(a, b),
        // Times, lower-case uuids, 'f' < 't', and text under C: byte order.
        _ => a.as_bytes().cmp(b.as_bytes()),
    }
}

/// The form of a value under which equal values of type `oid` are equal strings (1.50 and 1.5 are one group).
pub fn group_form(oid: u32, v: &str) -> Cow<'_, str> {
    match oid {
        NUMERIC if v.contains('.') => {
            let t = v.trim_end_matches('0').trim_end_matches('.');
            Cow::Owned(if t == "-0" || t.is_empty() {
                "0".to_owned()
            } else {
                t.to_owned()
            })
        }
        FLOAT4 | FLOAT8 if v == "-0" => Cow::Borrowed("0"),
        _ => Cow::Borrowed(v),
    }
}

/// PostgreSQL's numeric `sum / count` (what `avg` returns for integer and numeric input): the result scale of
/// `select_div_scale`, rounded half away from zero.
pub fn divide(sum: &str, count: &str) -> Option<String> {
    let (x, sx) = parse_decimal(sum)?;
    let (n, sn) = parse_decimal(count)?;
    if n == 0 || sn != 0 {
        return None;
    }
    // Weight and leading digit in base 10000, as numeric stores them.
    fn lead(v: i128, scale: u32) -> (i64, i128) {
        let u = v.unsigned_abs();
        let p = 10u128.pow(scale);
        let (int, frac) = (u / p, u % p);
        if int > 0 {
            let digits = int.to_string().len() as u32;
            let w = (digits - 1) / 4;
            return (w as i64, (int / 10u128.pow(4 * w)) as i128);
        }
        if frac == 0 {
            return (0, 0);
        }
        let padded = scale.div_ceil(4) * 4;
        let f = format!(
            "{:0>width$}",
            frac * 10u128.pow(padded - scale),
            width = padded as usize
        );
        for (k, group) in f.as_bytes().chunks(4).enumerate() {
            let g: i128 = std::str::from_utf8(group)
                .ok()
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            if g != 0 {
                return (-(k as i64) - 1, g);
            }
        }
        (0, 0)
    }
    let (w1, d1) = lead(x, sx);
    let (w2, d2) = lead(n, 0);
    let mut qweight = w1 - w2;
    if d1 <= d2 {
        qweight -= 1;
    }
    let rscale = (16 - qweight * 4).max(sx as i64).clamp(0, 1000) as u32;
    let num = x
        .unsigned_abs()
        .checked_mul(10u128.checked_pow(rscale.checked_sub(sx)?)?)?;
    let den = n.unsigned_abs();
    let (mut q, r) = (num / den, num % den);
    if r.checked_mul(2)? >= den {
        q += 1;
    }
    let q = i128::try_from(q).ok()?;
    let neg = (x < 0) != (n < 0) && q != 0;
    Some(format_decimal(if neg { -q } else { q }, rscale))
}

/// Combines one aggregate column of type `oid` from every shard.
pub fn combine(
    agg: Aggregate,
    oid: u32,
    values: &[Option<&str>],
    bytewise_text: bool,
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
            if !orderable(oid, bytewise_text) {
                return refuse("min/max");
            }
            let mut best: Option<&str> = None;
            for v in present {
                let better = match best {
                    None => true,
                    Some(b) => {
                        let o = compare(oid, v, b);
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

    fn combine_t(
        agg: Aggregate,
        oid: u32,
        values: &[Option<&str>],
    ) -> Result<Option<String>, String> {
        combine(agg, oid, values, false)
    }

    #[test]
    fn divides_like_numeric_div() {
        // Reference values from PostgreSQL 15: SELECT s::numeric / c::numeric.
        assert_eq!(divide("3", "2").as_deref(), Some("1.5000000000000000"));
        assert_eq!(divide("10", "3").as_deref(), Some("3.3333333333333333"));
        assert_eq!(divide("-10", "3").as_deref(), Some("-3.3333333333333333"));
        assert_eq!(divide("2", "3").as_deref(), Some("0.66666666666666666667"));
        assert_eq!(
            divide("123456789", "7").as_deref(),
            Some("17636684.142857142857")
        );
        assert_eq!(
            divide("1.25", "2").as_deref(),
            Some("0.62500000000000000000")
        );
        assert_eq!(divide("0", "5").as_deref(), Some("0.00000000000000000000"));
        assert_eq!(divide("1", "0"), None);
    }

    #[test]
    fn orders_like_postgresql() {
        assert_eq!(
            compare(DATE, "0044-03-15 BC", "0010-01-01 BC"),
            Ordering::Less
        );
        assert_eq!(compare(DATE, "infinity", "9999-12-31"), Ordering::Greater);
        assert_eq!(
            compare(TIMESTAMP, "-infinity", "0001-01-01 00:00:00 BC"),
            Ordering::Less
        );
        assert_eq!(group_form(NUMERIC, "1.500"), "1.5");
        assert_eq!(group_form(NUMERIC, "-0.00"), "0");
        assert_eq!(group_form(NUMERIC, "10"), "10");
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
            combine_t(Aggregate::Count, INT8, &[Some("3"), Some("0"), Some("4")]),
            Ok(Some("7".into()))
        );
        assert_eq!(combine_t(Aggregate::Count, INT8, &[]), Ok(Some("0".into())));
        assert_eq!(
            combine_t(
                Aggregate::Sum,
                NUMERIC,
                &[Some("1.50"), None, Some("-0.125")]
            ),
            Ok(Some("1.375".into()))
        );
        assert_eq!(
            combine_t(Aggregate::Sum, NUMERIC, &[Some("-0.5"), Some("0.25")]),
            Ok(Some("-0.25".into()))
        );
        assert_eq!(combine_t(Aggregate::Sum, INT8, &[None, None]), Ok(None));
        assert_eq!(
            combine_t(Aggregate::Min, INT4, &[Some("5"), Some("-7"), None]),
            Ok(Some("-7".into()))
        );
        assert_eq!(
            combine_t(Aggregate::Max, NUMERIC, &[Some("2.5"), Some("2.49")]),
            Ok(Some("2.5".into()))
        );
        assert_eq!(
            combine_t(Aggregate::BoolOr, BOOL, &[Some("f"), None, Some("t")]),
            Ok(Some("t".into()))
        );
        assert_eq!(
            combine_t(Aggregate::BoolAnd, BOOL, &[Some("f"), Some("t")]),
            Ok(Some("f".into()))
        );
        assert!(combine_t(Aggregate::Sum, 701, &[Some("1.5")]).is_err());
        assert!(combine_t(Aggregate::Max, 25, &[Some("a")]).is_err());
        assert!(combine_t(
            Aggregate::Sum,
            NUMERIC,
            &[Some("170141183460469231731687303715884105727"), Some("1")]
        )
        .is_err());
    }
}
