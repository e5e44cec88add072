//! Output formatting for a terminal: one query result as a readable block.

use std::io::Write;

/// A readable rendering of one result, for a terminal.
pub fn print_human(
    out: &mut impl Write,
    id: &str,
    r: &voicerag_actors::ContextResult,
) -> std::io::Result<()> {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    writeln!(
        out,
        "{id}: {} hits{}{}  rerank={}  embed {:.1} ms  search {:.1} ms  rerank {:.1} ms  total {:.1} ms{}{}",
        r.hits.len(),
        if r.floored > 0 {
            format!(" ({} below the relevance floor)", r.floored)
        } else {
            String::new()
        },
        if r.capped > 0 {
            format!(" ({} cut by max_context_chars)", r.capped)
        } else {
            String::new()
        },
        r.rerank.kind(),
        ms(r.timings.embed),
        ms(r.timings.search),
        ms(r.timings.rerank),
        ms(r.timings.total),
        if r.deadline_met() {
            ""
        } else {
            "  DEADLINE MISSED"
        },
        r.degraded
            .as_deref()
            .map(|d| format!("  degraded: {d}"))
            .unwrap_or_default(),
    )?;
    if let Some(w) = &r.time_window {
        let at = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map_or(ms.to_string(), |t| t.to_rfc3339())
        };
        writeln!(
            out,
            "  time window {:?}: {} to {} ({}), {:?}",
            w.phrase,
            at(w.start_ms),
            at(w.end_ms),
            w.time_zone,
            w.applied_as
        )?;
    }
    for (rank, hit) in r.hits.iter().enumerate() {
        writeln!(
            out,
            "  {:>2}. [{:.4}] {}  {}",
            rank + 1,
            hit.score,
            hit.id,
            one_line(&hit.text, 100)
        )?;
    }
    Ok(())
}

/// The first `max` characters of a text on one line.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}
