//! Output: human-readable tables, one JSON object with `--json`, CPU pinning
//! of generator threads and the progress line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Global output settings, shared by every subcommand.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Print one JSON object instead of tables (and no progress line).
    pub json: bool,
    /// Cores the generator's threads are pinned to (round-robin); empty: no pinning.
    pub cpus: Vec<usize>,
}

/// Runs shorter than this get no progress line.
const PROGRESS_MIN: Duration = Duration::from_secs(3);

impl Output {
    /// Pins the calling thread to `cpus[index % cpus.len()]`; does nothing
    /// without `--cpu`. Returns the core it pinned to.
    pub fn pin(&self, index: usize) -> Option<usize> {
        if self.cpus.is_empty() {
            return None;
        }
        let core = self.cpus[index % self.cpus.len()];
        if uturn_io::process::pin_current_thread(&[core]).is_ok() {
            Some(core)
        } else {
            eprintln!("uturn-loadgen: warning: could not pin a thread to CPU {core}");
            None
        }
    }

    /// Prints `value` as one JSON object on stdout.
    pub fn print_json<T: serde::Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let mut so = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut so, value)?;
        writeln!(so)?;
        so.flush()?;
        Ok(())
    }

    /// A progress line on stderr for a run of `total`, or `None` when it
    /// should not be shown: `quiet`, `--json`, stderr not a terminal, or a
    /// run shorter than about three seconds.
    pub fn progress(&self, total: Duration, quiet: bool, what: &str) -> Option<ProgressBar> {
        if quiet || self.json || total < PROGRESS_MIN || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(
            Some(total.as_millis() as u64),
            ProgressDrawTarget::stderr_with_hz(5),
        );
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {elapsed_precise} / {duration_precise} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Some(bar)
    }
}

/// A two-column table: a title, then `name  value` rows with aligned names.
#[derive(Clone, Debug, Default)]
pub struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn new(title: impl Into<String>) -> Self {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    /// Adds one `name  value` row.
    pub fn row(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((name.into(), value.into()));
        self
    }

    /// The table as text (ends with a newline).
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let mut s = String::new();
        s.push_str(&self.title);
        s.push('\n');
        s.push_str(&"─".repeat(self.title.chars().count().max(20)));
        s.push('\n');
        for (n, v) in &self.rows {
            let pad = width - n.chars().count();
            s.push_str("  ");
            s.push_str(n);
            s.push_str(&" ".repeat(pad + 2));
            s.push_str(v);
            s.push('\n');
        }
        s
    }

    /// Prints the table on stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// Prints a grid: a header row and data rows, columns padded to their
/// widest cell (numbers right-aligned, text left-aligned).
pub fn print_grid(title: &str, header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_grid(title, header, rows));
}

/// The text of [`print_grid`].
pub fn render_grid(title: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let numeric = |c: &str| {
        c.chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_digit() || ch == '-' || ch == '+')
    };
    let mut s = String::new();
    if !title.is_empty() {
        s.push_str(title);
        s.push('\n');
    }
    let line = |cells: &[String], s: &mut String| {
        s.push(' ');
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = w.saturating_sub(c.chars().count());
            s.push(' ');
            if numeric(c) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
            s.push(' ');
        }
        while s.ends_with(' ') {
            s.pop();
        }
        s.push('\n');
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    line(&head, &mut s);
    s.push_str("  ");
    s.push_str(&"─".repeat((widths.iter().sum::<usize>() + 2 * cols).saturating_sub(2)));
    s.push('\n');
    for r in rows {
        line(r, &mut s);
    }
    s
}

/// A rate with a thousands separator and no decimals, e.g. `123 456`.
pub fn fmt_count(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let neg = v < 0.0;
    let digits = format!("{:.0}", v.abs());
    let mut s = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(' ');
        }
        s.push(ch);
    }
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// A ratio as a percentage with enough digits for small losses.
pub fn fmt_pct(ratio: f64) -> String {
    if !ratio.is_finite() {
        return "-".into();
    }
    let p = ratio * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p.abs() < 0.01 {
        format!("{p:.4} %")
    } else if p.abs() < 1.0 {
        format!("{p:.3} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Failures per STUN error code as `486: 3, 508: 1` (`none` when empty).
pub fn fmt_code_counts(by_code: &BTreeMap<u16, u64>) -> String {
    if by_code.is_empty() {
        return "none".into();
    }
    by_code
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes in a human unit (KiB/MiB/GiB).
pub fn fmt_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let v = b as f64;
    if v >= K * K * K {
        format!("{:.2} GiB", v / (K * K * K))
    } else if v >= K * K {
        format!("{:.1} MiB", v / (K * K))
    } else if v >= K {
        format!("{:.1} KiB", v / K)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages() {
        assert_eq!(fmt_count(0.0), "0");
        assert_eq!(fmt_count(999.0), "999");
        assert_eq!(fmt_count(1000.0), "1 000");
        assert_eq!(fmt_count(1234567.4), "1 234 567");
        assert_eq!(fmt_pct(0.0), "0 %");
        assert_eq!(fmt_pct(0.5), "50.0 %");
        assert_eq!(fmt_pct(0.001), "0.100 %");
        assert_eq!(fmt_bytes(2048), "2.0 KiB");
        assert_eq!(fmt_code_counts(&BTreeMap::new()), "none");
        assert_eq!(
            fmt_code_counts(&BTreeMap::from([(486, 3), (508, 1)])),
            "486: 3, 508: 1"
        );
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new("T");
        t.row("a", "1").row("long name", "2");
        let s = t.render();
        assert!(s.contains("  a          1\n"));
        assert!(s.contains("  long name  2\n"));
        let g = render_grid("", &["x", "rate"], &[vec!["a".into(), "10".into()]]);
        assert!(g.contains("a    10"));
    }
}
