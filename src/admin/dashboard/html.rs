//! HTML building blocks of the dashboard: escaping, the page frame with its inline style sheet, and the admin
//! console's tables drawn as HTML tables.

use std::fmt::Write as _;

use crate::admin::table::Table;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes a percent-encoded path segment; `None` when it is not valid UTF-8 or a `%` is not followed by two hex
/// digits.
pub(crate) fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const STYLE: &str = "
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa;--card:#fff;--accent:#1f6feb;--warn:#b42318}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;align-items:baseline;gap:24px;padding:14px 24px;background:#111827;color:#fff}
header h1{font-size:18px;margin:0}header a{color:#c7d2fe;text-decoration:none;margin-right:14px}
header .meta{margin-left:auto;color:#9ca3af;font-size:12px}
main{padding:16px 24px;max-width:1400px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin:0 0 16px}
h2{font-size:15px;margin:0 0 10px}h3{font-size:14px;margin:12px 0 6px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure.chart{margin:0;flex:1 1 420px;max-width:660px}figure.chart svg{width:100%;height:auto}
figure.drifted figcaption{color:var(--warn);font-weight:600}
figcaption{font-weight:600;margin-bottom:4px}
.grid{stroke:var(--line);stroke-width:1}.axis{fill:var(--muted);font-size:11px}.empty{fill:var(--muted);font-size:13px}
rect.train{fill:#98a2b3}rect.live{fill:var(--accent)}
.legend{display:flex;gap:16px;color:var(--muted);font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:5px;border-radius:2px;vertical-align:middle}
.legend i.train{background:#98a2b3}.legend i.live{background:var(--accent)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
th{color:var(--muted);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.none{color:var(--muted)}.error{color:var(--warn)}
";

/// A whole page: `title`, and `body` inside the frame. The page reloads itself every ten seconds.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <meta http-equiv=\"refresh\" content=\"10\"><link rel=\"icon\" href=\"data:,\"><title>{t} · Ocelot</title><style>{STYLE}</style></head>\
         <body><header><h1>Ocelot</h1><nav><a href=\"/\">Overview</a><a href=\"/metrics\">Metrics</a></nav>\
         <span class=\"meta\">{v} · refreshes every 10 s</span></header><main>{body}</main></body></html>",
        t = esc(title),
        v = esc(&format!("Ocelot {}", env!("CARGO_PKG_VERSION"))),
    )
}

/// A section with a heading.
pub(crate) fn section(id: &str, heading: &str, content: &str) -> String {
    format!(
        "<section id=\"{}\"><h2>{}</h2>{content}</section>",
        esc(id),
        esc(heading)
    )
}

/// An admin table as HTML; `link` may turn a cell into a link (given the column name and the value).
pub(crate) fn table(t: &Table, empty: &str, link: &dyn Fn(&str, &str) -> Option<String>) -> String {
    if t.rows().is_empty() {
        return format!("<p class=\"none\">{}</p>", esc(empty));
    }
    let cols: Vec<(&str, bool)> = t.columns().collect();
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for (name, _) in &cols {
        let _ = write!(out, "<th>{}</th>", esc(name));
    }
    out.push_str("</tr></thead><tbody>");
    for row in t.rows() {
        out.push_str("<tr>");
        for ((name, num), v) in cols.iter().zip(row) {
            let v = v.as_deref().unwrap_or("");
            let class = if *num { " class=\"num\"" } else { "" };
            match link(name, v) {
                Some(href) => {
                    let _ = write!(
                        out,
                        "<td{class}><a href=\"{}\">{}</a></td>",
                        esc(&href),
                        esc(v)
                    );
                }
                None => {
                    let _ = write!(out, "<td{class}>{}</td>", esc(v));
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_round_trips_segments() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        for s in ["houses", "my project/ü", "a%b c"] {
            assert_eq!(decode_segment(&encode_segment(s)).as_deref(), Some(s));
        }
        assert_eq!(decode_segment("a%2"), None);
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(decode_segment("%ff"), None);
    }
}
