//! The spelling PostgreSQL reports for a parameter a client set at startup. A client that asks for
//! `client_encoding=utf-8` or `DateStyle=ISO` is told `UTF8` and `ISO, MDY` by a real server, and drivers compare
//! against those spellings (psycopg maps `client_encoding` to a Python codec, pgjdbc checks `DateStyle`), so the
//! greeting Ocelot sends before any server is involved must use them too. Values Ocelot does not know how to spell
//! are passed on unchanged; the server has the last word once the client's settings reach it.

use std::borrow::Cow;

/// PostgreSQL's encoding names (the "Character Sets" table of its documentation), compared as PostgreSQL does:
/// ignoring case and every character that is not a letter or digit.
const ENCODINGS: &[&str] = &[
    "BIG5",
    "EUC_CN",
    "EUC_JP",
    "EUC_JIS_2004",
    "EUC_KR",
    "EUC_TW",
    "GB18030",
    "GBK",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "JOHAB",
    "KOI8R",
    "KOI8U",
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "MULE_INTERNAL",
    "SJIS",
    "SHIFT_JIS_2004",
    "SQL_ASCII",
    "UHC",
    "UTF8",
    "WIN866",
    "WIN874",
    "WIN1250",
    "WIN1251",
    "WIN1252",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1256",
    "WIN1257",
    "WIN1258",
];

/// The aliases that documentation table lists, already in compared form.
const ENCODING_ALIASES: &[(&str, &str)] = &[
    ("unicode", "UTF8"),
    ("alt", "WIN866"),
    ("win", "WIN1251"),
    ("koi8", "KOI8R"),
    ("mskanji", "SJIS"),
    ("shiftjis", "SJIS"),
    ("win932", "SJIS"),
    ("windows932", "SJIS"),
    ("win936", "GBK"),
    ("windows936", "GBK"),
    ("win949", "UHC"),
    ("windows949", "UHC"),
    ("win950", "BIG5"),
    ("windows950", "BIG5"),
    ("abc", "WIN1258"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("vscii", "WIN1258"),
    ("iso88591", "LATIN1"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88599", "LATIN5"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
];

fn compared(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The canonical name of an encoding, or `None` for a name PostgreSQL would refuse.
pub(crate) fn encoding(name: &str) -> Option<&'static str> {
    let key = compared(name);
    if let Some(win) = key.strip_prefix("windows") {
        // WindowsNNNN is WINNNNN for every code page PostgreSQL has.
        return encoding(&format!("win{win}"));
    }
    ENCODINGS
        .iter()
        .copied()
        .find(|e| compared(e) == key)
        .or_else(|| {
            ENCODING_ALIASES
                .iter()
                .find(|(a, _)| *a == key)
                .map(|(_, e)| *e)
        })
}

/// `DateStyle` as PostgreSQL reports it after `SET DateStyle = value` on a server where it was `current`: an
/// output style and a field order, each kept from `current` when `value` does not name one. `None` when `value`
/// has a word PostgreSQL does not accept.
pub(crate) fn date_style(value: &str, current: &str) -> Option<String> {
    let (mut style, mut order) = current
        .split_once(',')
        .and_then(|(a, b)| Some((style_word(a.trim())?, order_word(b.trim())?)))
        .unwrap_or(("ISO", "MDY"));
    let mut have_order = false;
    for word in value.split([',', ' ']).filter(|w| !w.is_empty()) {
        if let Some(s) = style_word(word) {
            style = s;
            // German dates are day first unless the value names an order too.
            if s == "German" && !have_order {
                order = "DMY";
            }
        } else if let Some(o) = order_word(word) {
            (order, have_order) = (o, true);
        } else if word.eq_ignore_ascii_case("default") {
            (style, order) = ("ISO", "MDY");
        } else {
            return None;
        }
    }
    Some(format!("{style}, {order}"))
}

/// An output style word, as PostgreSQL spells it back.
fn style_word(w: &str) -> Option<&'static str> {
    Some(match w.to_ascii_uppercase().as_str() {
        "ISO" => "ISO",
        "SQL" => "SQL",
        "POSTGRES" => "Postgres",
        "GERMAN" => "German",
        _ => return None,
    })
}

/// A field order word (or one of its synonyms), as PostgreSQL spells it back.
fn order_word(w: &str) -> Option<&'static str> {
    Some(match w.to_ascii_uppercase().as_str() {
        "YMD" => "YMD",
        "DMY" | "EURO" | "EUROPEAN" => "DMY",
        "MDY" | "US" | "NONEURO" | "NONEUROPEAN" => "MDY",
        _ => return None,
    })
}

/// A boolean setting as PostgreSQL shows it (`on` / `off`), for the spellings it accepts.
pub(crate) fn boolean(value: &str) -> Option<&'static str> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some("on"),
        "off" | "false" | "no" | "0" | "f" | "n" => Some("off"),
        _ => None,
    }
}

/// The value a server would report for reported parameter `name` set to `value` where it was `current`.
pub(crate) fn reported<'a>(name: &str, value: &'a str, current: &str) -> Cow<'a, str> {
    let known = if name.eq_ignore_ascii_case("client_encoding") {
        encoding(value).map(str::to_owned)
    } else if name.eq_ignore_ascii_case("DateStyle") {
        date_style(value, current)
    } else if name.eq_ignore_ascii_case("standard_conforming_strings") {
        boolean(value).map(str::to_owned)
    } else {
        None
    };
    known.map_or(Cow::Borrowed(value), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_as_postgresql_spells_them() {
        for (given, want) in [
            ("utf8", "UTF8"),
            ("utf-8", "UTF8"),
            ("UTF_8", "UTF8"),
            ("unicode", "UTF8"),
            ("eucjp", "EUC_JP"),
            ("euc-jp", "EUC_JP"),
            ("latin1", "LATIN1"),
            ("ISO-8859-1", "LATIN1"),
            ("iso_8859_5", "ISO_8859_5"),
            ("Windows-1252", "WIN1252"),
            ("cp1252x", "cp1252x"),
            ("sql_ascii", "SQL_ASCII"),
        ] {
            assert_eq!(reported("client_encoding", given, "UTF8"), want, "{given}");
        }
        assert_eq!(encoding("klingon"), None);
    }

    #[test]
    fn date_styles_merge_with_the_current_one() {
        assert_eq!(date_style("ISO", "ISO, MDY").as_deref(), Some("ISO, MDY"));
        assert_eq!(date_style("iso", "SQL, DMY").as_deref(), Some("ISO, DMY"));
        assert_eq!(
            date_style("German", "ISO, MDY").as_deref(),
            Some("German, DMY")
        );
        assert_eq!(
            date_style("YMD, postgres", "ISO, MDY").as_deref(),
            Some("Postgres, YMD")
        );
        assert_eq!(date_style("euro", "ISO, MDY").as_deref(), Some("ISO, DMY"));
        assert_eq!(date_style("nonsense", "ISO, MDY"), None);
        assert_eq!(reported("DateStyle", "nonsense", "ISO, MDY"), "nonsense");
    }

    #[test]
    fn booleans_and_other_parameters() {
        assert_eq!(reported("standard_conforming_strings", "TRUE", "on"), "on");
        assert_eq!(reported("standard_conforming_strings", "0", "on"), "off");
        assert_eq!(reported("application_name", "App", ""), "App");
    }
}
