//! Parameters of `pgml.*` calls that arrive over the extended protocol. Ocelot answers these statements itself, so
//! it must say what types their parameters have (the driver encodes its values by them) and then put the values
//! into the SQL as literals before serving it as it serves a simple Query. Types come from the Parse, from a cast
//! (`$2::real[]`), from the parameter's place in a `pgml.*` call (features are `real[]`, a project is `text`), or
//! from the server (per-row queries); values are decoded from text or from the binary format of those types.

use ocelot_protocol::extended::BindValues;
use ocelot_router::session_sql::quote_literal;

pub(crate) const BOOL: u32 = 16;
pub const INT8: u32 = 20;
pub(crate) const INT2: u32 = 21;
pub(crate) const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub(crate) const FLOAT4: u32 = 700;
pub(crate) const FLOAT8: u32 = 701;
pub(crate) const VARCHAR: u32 = 1043;
pub(crate) const NUMERIC: u32 = 1700;
pub(crate) const JSONB: u32 = 3802;
pub(crate) const BOOL_ARRAY: u32 = 1000;
pub(crate) const INT2_ARRAY: u32 = 1005;
pub(crate) const INT4_ARRAY: u32 = 1007;
pub(crate) const INT8_ARRAY: u32 = 1016;
pub(crate) const FLOAT4_ARRAY: u32 = 1021;
pub(crate) const FLOAT8_ARRAY: u32 = 1022;

/// The element type of an array type Ocelot reads.
fn element(array: u32) -> Option<u32> {
    Some(match array {
        BOOL_ARRAY => BOOL,
        INT2_ARRAY => INT2,
        INT4_ARRAY => INT4,
        INT8_ARRAY => INT8,
        FLOAT4_ARRAY => FLOAT4,
        FLOAT8_ARRAY => FLOAT8,
        _ => return None,
    })
}

/// A type name as written in a cast, as its OID (0 when Ocelot does not know it).
fn type_oid(name: &str) -> u32 {
    let name = name.trim().to_ascii_lowercase();
    let (base, array) = match name.strip_suffix("[]") {
        Some(b) => (b.trim(), true),
        None => (name.as_str(), false),
    };
    let scalar = match base {
        "real" | "float4" => FLOAT4,
        "double precision" | "float8" | "float" => FLOAT8,
        "smallint" | "int2" => INT2,
        "int" | "integer" | "int4" => INT4,
        "bigint" | "int8" => INT8,
        "bool" | "boolean" => BOOL,
        "text" | "varchar" | "character varying" => TEXT,
        "numeric" | "decimal" => NUMERIC,
        "jsonb" | "json" => JSONB,
        _ => return 0,
    };
    if !array {
        return scalar;
    }
    match scalar {
        FLOAT4 => FLOAT4_ARRAY,
        FLOAT8 => FLOAT8_ARRAY,
        INT2 => INT2_ARRAY,
        INT4 => INT4_ARRAY,
        INT8 => INT8_ARRAY,
        BOOL => BOOL_ARRAY,
        _ => 0,
    }
}

/// Where each `$n` placeholder is in `sql` (byte ranges), outside literals, quoted names and comments.
/// The most parameters a statement can have (the protocol counts them in an Int16).
const MAX_PARAMS: usize = 65535;

fn placeholders(sql: &str) -> Vec<(usize, usize, usize)> {
    let b = sql.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = ocelot_router::session_sql::skip_quoted(b, i) {
            i = end;
            continue;
        }
        let digits = if b[i] == b'$' {
            b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count()
        } else {
            0
        };
        if digits > 0 {
            let n: usize = sql[i + 1..i + 1 + digits].parse().unwrap_or(0);
            // PostgreSQL's protocol carries at most 65535 parameters; a larger number is no parameter (the
            // server refuses the statement), and must not size anything Ocelot allocates.
            if n > 0 && n <= MAX_PARAMS {
                found.push((i, i + 1 + digits, n));
            }
            i += 1 + digits;
        } else {
            i += 1;
        }
    }
    found
}

/// How many parameters `sql` takes (its highest `$n`).
pub(crate) fn count(sql: &str) -> usize {
    placeholders(sql).iter().map(|p| p.2).max().unwrap_or(0)
}

/// The type of each parameter of `sql` as far as Ocelot can tell without a server: declared in the Parse, cast in
/// the SQL, or by its place in a `pgml.*` call; 0 where it cannot.
pub fn infer_types(sql: &str, declared: &[u32]) -> Vec<u32> {
    let n = count(sql);
    let mut types: Vec<u32> = (0..n)
        .map(|i| declared.get(i).copied().unwrap_or(0))
        .collect();
    for (_, end, p) in placeholders(sql) {
        if types[p - 1] != 0 {
            continue;
        }
        let rest = sql[end..].trim_start();
        if let Some(cast) = rest.strip_prefix("::") {
            let name: String = cast
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '[' | ']'))
                .collect();
            // "double precision" is two words; anything after a type name ends at the next keyword-free stop.
            types[p - 1] =
                type_oid(&name).max(type_oid(name.split_whitespace().next().unwrap_or("")));
        }
    }
    if let Ok(calls) = crate::sql::call::find_calls(sql) {
        for call in calls {
            for (i, (name, arg)) in call.args.iter().enumerate() {
                let crate::sql::call::Arg::Expr(e) = arg else {
                    continue;
                };
                let Some(p) = e.strip_prefix('$').and_then(|d| d.parse::<usize>().ok()) else {
                    continue;
                };
                if p == 0 || p > n || types[p - 1] != 0 {
                    continue;
                }
                let features = matches!(name.as_deref(), Some("features"))
                    || (name.is_none() && i == 1 && call.function.starts_with("predict"));
                types[p - 1] = if features { FLOAT4_ARRAY } else { TEXT };
            }
        }
    }
    types
}

/// A value as an SQL literal, from its text form.
fn literal_of_text(oid: u32, text: &str) -> Result<String, String> {
    if let Some(_el) = element(oid) {
        let inner = text
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| format!("malformed array literal: \"{text}\""))?;
        let items: Vec<String> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.eq_ignore_ascii_case("null") {
                    Ok("NULL".to_owned())
                } else {
                    number_literal(s)
                }
            })
            .collect::<Result<_, _>>()?;
        return Ok(array_literal(oid, &items));
    }
    match oid {
        INT2 | INT4 | INT8 | FLOAT4 | FLOAT8 | NUMERIC => number_literal(text),
        BOOL => Ok(if matches!(text, "t" | "true" | "1" | "on" | "yes") {
            "true".into()
        } else {
            "false".into()
        }),
        _ => Ok(quote_literal(text)),
    }
}

/// A number checked to be one (so it cannot carry SQL), written as a literal.
fn number_literal(s: &str) -> Result<String, String> {
    let t = s.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(t.to_owned()),
        Ok(_) => Ok(format!("'{t}'::float8")),
        Err(_) => Err(format!("invalid input syntax for a number: \"{t}\"")),
    }
}

fn array_literal(oid: u32, items: &[String]) -> String {
    let el = match oid {
        FLOAT4_ARRAY => "real",
        FLOAT8_ARRAY => "float8",
        INT2_ARRAY => "int2",
        INT4_ARRAY => "int4",
        INT8_ARRAY => "int8",
        _ => "bool",
    };
    if items.is_empty() {
        format!("'{{}}'::{el}[]")
    } else {
        format!("ARRAY[{}]", items.join(", "))
    }
}

fn be<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("binary value of {} bytes where {N} were expected", b.len()))
}

/// A scalar's binary form as its text.
fn scalar_text(oid: u32, b: &[u8]) -> Result<String, String> {
    Ok(match oid {
        BOOL => if b.first().copied().unwrap_or(0) != 0 {
            "t"
        } else {
            "f"
        }
        .into(),
        INT2 => i16::from_be_bytes(be(b)?).to_string(),
        INT4 => i32::from_be_bytes(be(b)?).to_string(),
        INT8 => i64::from_be_bytes(be(b)?).to_string(),
        FLOAT4 => f32::from_be_bytes(be(b)?).to_string(),
        FLOAT8 => f64::from_be_bytes(be(b)?).to_string(),
        NUMERIC => ocelot_router::binary::numeric_text(b).ok_or("malformed binary numeric")?,
        TEXT | VARCHAR | 0 => {
            String::from_utf8(b.to_vec()).map_err(|_| "text that is not UTF-8")?
        }
        JSONB => String::from_utf8(b.get(1..).unwrap_or_default().to_vec())
            .map_err(|_| "jsonb that is not UTF-8")?,
        other => {
            return Err(format!(
                "Ocelot cannot read a binary parameter of type {other} in a pgml call"
            ))
        }
    })
}

/// A one-dimensional array's binary form (ndim, has-null flag, element type, length and lower bound, then each
/// element's length and bytes) as its SQL literal.
fn array_of_binary(oid: u32, b: &[u8]) -> Result<String, String> {
    let el = element(oid).ok_or("not an array type")?;
    let word = |at: usize| -> Result<i32, String> {
        Ok(i32::from_be_bytes(be(b
            .get(at..at + 4)
            .ok_or("truncated binary array")?)?))
    };
    let ndim = word(0)?;
    if ndim == 0 {
        return Ok(array_literal(oid, &[]));
    }
    if ndim != 1 {
        return Err("pgml features must be a one-dimensional array".into());
    }
    let len = word(12)?.max(0) as usize;
    let mut at = 20;
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        let n = word(at)?;
        at += 4;
        if n < 0 {
            items.push("NULL".to_owned());
            continue;
        }
        let v = b.get(at..at + n as usize).ok_or("truncated binary array")?;
        at += n as usize;
        items.push(number_literal(&scalar_text(el, v)?)?);
    }
    Ok(array_literal(oid, &items))
}

/// `sql` with each `$n` replaced by the literal of the bound value (of type `types[n-1]`).
pub fn substitute(sql: &str, types: &[u32], bind: &BindValues) -> Result<String, String> {
    let spots = placeholders(sql);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut last = 0;
    for (start, end, n) in spots {
        let value = bind
            .params
            .get(n - 1)
            .ok_or_else(|| format!("there is no parameter ${n}"))?;
        let oid = types.get(n - 1).copied().unwrap_or(0);
        let format = match bind.param_formats.as_slice() {
            [] => 0,
            [one] => *one,
            all => all.get(n - 1).copied().unwrap_or(0),
        };
        let literal = match value {
            None => "NULL".to_owned(),
            Some(v) if format == 1 && element(oid).is_some() => array_of_binary(oid, v)?,
            Some(v) if format == 1 => literal_of_text(oid, &scalar_text(oid, v)?)?,
            Some(v) => literal_of_text(
                oid,
                std::str::from_utf8(v).map_err(|_| "a parameter that is not UTF-8".to_owned())?,
            )?,
        };
        out.push_str(&sql[last..start]);
        out.push_str(&literal);
        last = end;
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_parameter_numbers_are_not_parameters() {
        // Found by the pgml fuzz target: `$11111111111` sized a vector of that many parameter types.
        assert_eq!(count("SELECT pgml.predict('p', $11111111111)"), 0);
        assert!(infer_types("SELECT $99999999999999, $2", &[]).len() == 2);
    }

    fn float4_array(values: &[f32]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [1i32, 0, FLOAT4 as i32, values.len() as i32, 1] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for v in values {
            b.extend_from_slice(&4i32.to_be_bytes());
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    #[test]
    fn types_from_the_parse_casts_and_the_call() {
        assert_eq!(
            infer_types("SELECT pgml.predict($1, $2)", &[]),
            vec![TEXT, FLOAT4_ARRAY]
        );
        assert_eq!(
            infer_types(
                "SELECT pgml.predict($1::bigint, $2::double precision[])",
                &[]
            ),
            vec![INT8, FLOAT8_ARRAY]
        );
        assert_eq!(
            infer_types("SELECT pgml.predict($1, $2)", &[0, FLOAT8_ARRAY]),
            vec![TEXT, FLOAT8_ARRAY]
        );
        assert_eq!(
            infer_types(
                "SELECT * FROM pgml.train($1, 'regression', $2, $3, algorithm => $4)",
                &[]
            ),
            vec![TEXT; 4]
        );
        // Not in a call, no cast: unknown.
        assert_eq!(
            infer_types(
                "SELECT id, pgml.predict('p', ARRAY[a]) FROM t WHERE id = $1",
                &[]
            ),
            vec![0]
        );
        assert_eq!(
            count("SELECT '$1', \"$2\", $$ $3 $$, $tag$ $4 $tag$ -- $5\n /* $6 */ $7"),
            7
        );
        assert_eq!(placeholders("SELECT '$1', $2").len(), 1);
    }

    #[test]
    fn values_become_literals() {
        let bind = BindValues {
            param_formats: vec![0, 1],
            params: vec![Some(b"it's".to_vec()), Some(float4_array(&[1.5, -2.0]))],
            result_formats: vec![],
        };
        assert_eq!(
            substitute("SELECT pgml.predict($1, $2)", &[TEXT, FLOAT4_ARRAY], &bind).unwrap(),
            "SELECT pgml.predict($ocelot$it's$ocelot$, ARRAY[1.5, -2])"
        );
        let bind = BindValues {
            param_formats: vec![0],
            params: vec![Some(b"{1, 2.5,NULL}".to_vec()), None, Some(b"7".to_vec())],
            result_formats: vec![],
        };
        assert_eq!(
            substitute("f($1::real[], $2, $3)", &[FLOAT4_ARRAY, TEXT, INT8], &bind).unwrap(),
            "f(ARRAY[1, 2.5, NULL]::real[], NULL, 7)"
        );
        let bind = BindValues {
            param_formats: vec![1],
            params: vec![Some(42i64.to_be_bytes().to_vec())],
            result_formats: vec![],
        };
        assert_eq!(substitute("g($1)", &[INT8], &bind).unwrap(), "g(42)");
        // Values that would smuggle SQL into a number are refused.
        let bind = BindValues {
            param_formats: vec![0],
            params: vec![Some(b"1); DROP TABLE t; --".to_vec())],
            result_formats: vec![],
        };
        assert!(substitute("g($1)", &[INT8], &bind).is_err());
        assert!(substitute("g($2)", &[INT8], &bind).is_err());
    }
}
