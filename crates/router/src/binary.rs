//! The binary wire format of the types Ocelot merges across shards, for clients that ask for binary results
//! (tokio-postgres, asyncpg): decoding a value into the text form `merge` compares and combines (dates, times and
//! timestamps become their integer count, which orders the same way), and encoding the combined aggregates
//! (int8 counts and sums, numeric sums and averages, booleans) back.

const BOOL: u32 = 16;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const NAME: u32 = 19;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const VARCHAR: u32 = 1043;
const DATE: u32 = 1082;
const TIME: u32 = 1083;
const TIMESTAMP: u32 = 1114;
const NUMERIC: u32 = 1700;
const UUID: u32 = 2950;

/// A binary value as (the type to compare it as, its text form), for the types Ocelot merges.
pub fn decode(oid: u32, b: &[u8]) -> Option<(u32, String)> {
    Some(match oid {
        BOOL => (BOOL, if *b.first()? != 0 { "t" } else { "f" }.to_owned()),
        INT2 => (INT2, i16::from_be_bytes(b.try_into().ok()?).to_string()),
        INT4 => (INT4, i32::from_be_bytes(b.try_into().ok()?).to_string()),
        INT8 => (INT8, i64::from_be_bytes(b.try_into().ok()?).to_string()),
        FLOAT4 => (
            FLOAT8,
            float_text(f32::from_be_bytes(b.try_into().ok()?) as f64),
        ),
        FLOAT8 => (FLOAT8, float_text(f64::from_be_bytes(b.try_into().ok()?))),
        TEXT | VARCHAR | NAME => (oid, String::from_utf8(b.to_vec()).ok()?),
        // Days, or microseconds, since 2000-01-01 (infinities at the ends of the range): ordered as integers.
        DATE => (INT8, i32::from_be_bytes(b.try_into().ok()?).to_string()),
        TIME | TIMESTAMP => (INT8, i64::from_be_bytes(b.try_into().ok()?).to_string()),
        UUID => {
            let bytes: [u8; 16] = b.try_into().ok()?;
            (UUID, bytes.iter().map(|x| format!("{x:02x}")).collect())
        }
        NUMERIC => (NUMERIC, numeric_text(b)?),
        _ => return None,
    })
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f:e}")
    }
}

/// numeric's binary form (ndigits, weight, sign, dscale, base-10000 digits) as text.
pub fn numeric_text(b: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> { Some(i16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let ndigits = word(0)?.max(0) as usize;
    let weight = word(2)? as i32;
    let sign = word(4)? as u16;
    let dscale = word(6)?.max(0) as usize;
    match sign {
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<Option<_>>()?;
    let digit = |w: i32| -> i16 {
        let idx = weight - w;
        if idx >= 0 && (idx as usize) < digits.len() {
            digits[idx as usize]
        } else {
            0
        }
    };
    let mut int = String::new();
    if weight >= 0 {
        for w in (0..=weight).rev() {
            let d = digit(w);
            if int.is_empty() {
                if d != 0 {
                    int.push_str(&d.to_string());
                }
            } else {
                int.push_str(&format!("{d:04}"));
            }
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    let mut frac = String::new();
    let mut w = -1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(w)));
        w -= 1;
    }
    frac.truncate(dscale);
    let neg = sign == 0x4000 && (int != "0" || frac.bytes().any(|c| c != b'0'));
    Some(format!(
        "{}{int}{}{frac}",
        if neg { "-" } else { "" },
        if dscale > 0 { "." } else { "" }
    ))
}

/// A decimal text ("-12.340", "NaN") as numeric's binary form, keeping its scale.
pub fn numeric_binary(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let head = |out: &mut Vec<u8>, n: i16, w: i16, sign: u16, dscale: u16| {
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&w.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
    };
    match s {
        "NaN" => {
            head(&mut out, 0, 0, 0xC000, 0);
            return Some(out);
        }
        "Infinity" => {
            head(&mut out, 0, 0, 0xD000, 0);
            return Some(out);
        }
        "-Infinity" => {
            head(&mut out, 0, 0, 0xF000, 0);
            return Some(out);
        }
        _ => {}
    }
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit())
        || int.is_empty() && frac.is_empty()
    {
        return None;
    }
    let dscale = frac.len();
    // Pad the integer part on the left and the fraction on the right to whole base-10000 digits.
    let int_pad = (4 - int.len() % 4) % 4;
    let padded_int = format!("{}{int}", "0".repeat(int_pad));
    let frac_pad = (4 - frac.len() % 4) % 4;
    let padded_frac = format!("{frac}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| {
                std::str::from_utf8(c)
                    .ok()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    };
    let ints = group(&padded_int);
    let fracs = group(&padded_frac);
    let mut digits: Vec<i16> = ints.iter().chain(fracs.iter()).copied().collect();
    let mut weight = ints.len() as i32 - 1;
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign = if neg && !digits.is_empty() { 0x4000 } else { 0 };
    head(
        &mut out,
        i16::try_from(digits.len()).ok()?,
        i16::try_from(weight).ok()?,
        sign,
        u16::try_from(dscale).ok()?,
    );
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
    Some(out)
}

/// A combined aggregate (text) in binary, for the result types aggregates have.
pub fn encode(oid: u32, text: &str) -> Option<Vec<u8>> {
    Some(match oid {
        INT8 => text.parse::<i64>().ok()?.to_be_bytes().to_vec(),
        INT4 => text.parse::<i32>().ok()?.to_be_bytes().to_vec(),
        INT2 => text.parse::<i16>().ok()?.to_be_bytes().to_vec(),
        NUMERIC => numeric_binary(text)?,
        BOOL => vec![u8::from(text == "t")],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trips() {
        for s in [
            "0",
            "1",
            "-1",
            "12.340",
            "-0.001",
            "10000",
            "123456789.123456789",
            "0.00",
            "9999.9999",
            "1.5000000000000000",
            "NaN",
        ] {
            let b = numeric_binary(s).unwrap();
            assert_eq!(numeric_text(&b).as_deref(), Some(s), "{s}");
        }
        // 12.34 as PostgreSQL sends it: ndigits 2, weight 0, sign 0, dscale 2, digits 12 3400.
        assert_eq!(
            numeric_binary("12.34").unwrap(),
            vec![0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 0x0d, 0x48]
        );
    }

    #[test]
    fn decodes_for_comparison() {
        assert_eq!(
            decode(INT4, &(-5i32).to_be_bytes()),
            Some((INT4, "-5".into()))
        );
        assert_eq!(decode(BOOL, &[1]), Some((BOOL, "t".into())));
        assert_eq!(
            decode(DATE, &(-3i32).to_be_bytes()),
            Some((INT8, "-3".into()))
        );
        assert_eq!(decode(TEXT, b"abc"), Some((TEXT, "abc".into())));
        assert_eq!(
            decode(FLOAT8, &1.5f64.to_be_bytes())
                .unwrap()
                .1
                .parse::<f64>()
                .unwrap(),
            1.5
        );
        assert_eq!(decode(3802, b"{}"), None);
        assert_eq!(encode(INT8, "42"), Some(42i64.to_be_bytes().to_vec()));
    }
}
