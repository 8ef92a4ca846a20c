//! What the client commands print: tables and messages for people, the
//! server's JSON for scripts, and a spinner on stderr only when stderr is a
//! terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `println!` that ends the process quietly, as SIGPIPE would (status 141),
/// when stdout is a closed pipe (`agenttier sandbox list | head -1`),
/// instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::client::output::print_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to stdout; see [`outln`].
pub fn print_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        exit_on_broken_pipe(&e);
    }
}

/// Ends the process with 141 (128 + SIGPIPE) when `e` says the reader of
/// stdout is gone; there is no one left to tell anything.
pub fn exit_on_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Prints `v` as indented JSON on stdout.
pub fn json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Prints `v` as one line of JSON on stdout (for streams), flushed.
pub fn json_line(v: &Value) {
    outln!("{v}");
}

/// Writes one line of a run's output, as bytes, to stdout or (for
/// `stderr`) stderr, and flushes it: output appears as it arrives.
pub fn write_line(stream: &str, bytes: &[u8]) {
    fn put(mut w: impl Write, bytes: &[u8]) {
        let r = w
            .write_all(bytes)
            .and_then(|()| w.write_all(b"\n"))
            .and_then(|()| w.flush());
        if let Err(e) = r {
            exit_on_broken_pipe(&e);
        }
    }
    if stream == "stderr" {
        put(std::io::stderr().lock(), bytes);
    } else {
        put(std::io::stdout().lock(), bytes);
    }
}

/// Prints a table with aligned columns; nothing for no rows.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.trim_end().to_string()
    };
    outln!("{}", line(headers.to_vec()));
    for row in rows {
        outln!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Prints `key: value` lines, values aligned, skipping empty values.
pub fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        outln!("{:<width$} {v}", format!("{k}:"));
    }
}

/// A string field of `v`, or "".
pub fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An argv array shown as a command line.
pub fn argv(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let w = x.as_str().unwrap_or_default();
                    if !w.is_empty()
                        && w.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
                    {
                        w.to_string()
                    } else {
                        format!("'{}'", w.replace('\'', r"'\''"))
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// How long ago an RFC 3339 time was: `42s`, `5m`, `3h`, `2d`.
pub fn age(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return rfc3339.to_string();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// A spinner on stderr with a label and the time elapsed; a no-op unless
/// stderr is a terminal, so pipes and logs never see it.
pub struct Spinner {
    on: bool,
    label: String,
    started: Instant,
    frame: usize,
    drawn: bool,
}

impl Spinner {
    /// How often [`tick`](Self::tick) should be called.
    pub const PERIOD: Duration = Duration::from_millis(100);

    pub fn new(label: impl Into<String>) -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
            label: label.into(),
            started: Instant::now(),
            frame: 0,
            drawn: false,
        }
    }

    pub fn set_label(&mut self, label: impl Into<String>) {
        self.label = label.into();
    }

    /// Draws the next frame.
    pub fn tick(&mut self) {
        if !self.on {
            return;
        }
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K{} {} ({}s)",
            FRAMES[self.frame],
            self.label,
            self.started.elapsed().as_secs()
        );
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the spinner's line, before other output.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_shown_as_a_shell_would_read_it() {
        let v = serde_json::json!(["python", "/workspace/agent.py", "a b", "it's"]);
        assert_eq!(argv(&v), r"python /workspace/agent.py 'a b' 'it'\''s'");
    }

    #[test]
    fn ages() {
        assert_eq!(age("not a time"), "not a time");
        assert_eq!(age("2000-01-01T00:00:00Z").chars().last(), Some('d'));
    }
}
