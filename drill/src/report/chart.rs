//! The report's charts: each drill's achieved RTO or RPO as a share of its own objective, so a
//! 1 s objective and a 24 h one read alike (on one linear axis of seconds the first is
//! invisible). The objective is the line at 100 %; a drill that measured nothing is drawn as a
//! dash with the reason, never as 0.

use std::fmt::Write as _;

use serde_json::Value;

use super::render::{esc, human_secs, num};

/// One chart: a point per drill at achieved / objective (red above the line, orange for a drill
/// that failed for another reason, green otherwise); "—" where nothing was measured.
pub fn svg(drills: &[Value], title: &str, achieved: &str, objective: &str) -> String {
    let (w, h, pad) = (560.0, 220.0, 44.0);
    let shares: Vec<Option<(f64, f64, f64)>> = drills
        .iter()
        .map(|d| {
            let o = num(&d[objective]);
            d[achieved]
                .as_f64()
                .map(|a| (a, o, if o > 0.0 { a / o } else { f64::INFINITY }))
        })
        .collect();
    // The axis shows at least up to 150 % of the objective, and caps at 10× (a point beyond is
    // drawn at the top with its value in the tooltip).
    let top = shares
        .iter()
        .flatten()
        .map(|(_, _, s)| s.min(10.0))
        .fold(1.5, f64::max)
        * 1.1;
    let n = drills.len().max(1) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * (i as f64 + 0.5) / n;
    let y = |share: f64| h - pad - (h - 2.0 * pad) * (share.min(top) / top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{pad}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{t}</text>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#444\"/>\
         <line x1=\"{pad}\" y1=\"{yo}\" x2=\"{r}\" y2=\"{yo}\" stroke=\"#888\" stroke-dasharray=\"4 3\"><title>the objective</title></line>\
         <text x=\"4\" y=\"{yo_label}\" font-size=\"10\">100 %</text>\
         <text x=\"4\" y=\"{top_label}\" font-size=\"10\">{top_pct:.0} %</text><text x=\"4\" y=\"{b}\" font-size=\"10\">0</text>",
        t = esc(title),
        b = h - pad,
        r = w - pad,
        yo = y(1.0),
        yo_label = y(1.0) + 4.0,
        top_label = pad + 4.0,
        top_pct = top * 100.0,
    );
    for (i, (d, share)) in drills.iter().zip(&shares).enumerate() {
        let passed = d["passed"] == true;
        let label = h - pad + 14.0;
        let Some((a, o, s)) = share else {
            let reason = d["reason"].as_str().unwrap_or("not measured");
            let _ = write!(
                svg,
                "<text x=\"{cx}\" y=\"{cy}\" font-size=\"14\" text-anchor=\"middle\" fill=\"#c0392b\">—<title>drill {n}: not measured ({why})</title></text>\
                 <text x=\"{cx}\" y=\"{label}\" font-size=\"10\" text-anchor=\"middle\">{n}</text>",
                cx = x(i),
                cy = h - pad - 6.0,
                n = i + 1,
                why = esc(reason),
            );
            continue;
        };
        let over = a > o;
        let _ = write!(
            svg,
            "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"6\" fill=\"{c}\"><title>drill {n}: {as_} of {os} ({pct:.0} %){failed}</title></circle>\
             <text x=\"{cx}\" y=\"{label}\" font-size=\"10\" text-anchor=\"middle\">{n}</text>",
            cx = x(i),
            cy = y(*s),
            c = match (over, passed) {
                (true, _) => "#c0392b",
                (false, false) => "#e67e22",
                (false, true) => "#27ae60",
            },
            n = i + 1,
            os = esc(&human_secs(*o)),
            as_ = esc(&human_secs(*a)),
            pct = (s * 100.0).min(1e6),
            failed = if passed { "" } else { " (drill failed)" },
        );
    }
    svg.push_str("</svg>");
    svg
}
