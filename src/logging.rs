//! Logging: tracing to stderr (human on a terminal, plain lines otherwise) and a per-run log
//! file under the XDG cache directory. On a terminal, commands that run phases also get the
//! live display ([`crate::display`]), fed by the same events.
//!
//! Logs go to stderr so stdout stays clean for data (`k0sctl kubeconfig > admin.conf`,
//! `k0sctl init > k0sctl.yaml`). Each run that talks to hosts gets its own file,
//! `$XDG_CACHE_HOME/k0sctl/logs/k0sctl-<UTC time>-<pid>.log`, created 0600, always at debug level
//! (trace with `--trace`); its path is printed when a command fails. The newest
//! [`KEEP_LOG_FILES`] files are kept.
//!
//! A line about one host names it in the [`ABOUT`] field, not in its text:
//! `tracing::info!(about = %h.name, "connected")`. Both outputs render the field as the line's
//! `<host>: ` prefix ([`HostFields`]), so the lines read `10.0.0.1:22: connected` as they
//! always have, and the live display takes the host from the field. (A `host` field, as the
//! transport's `exec` lines have, is an ordinary field and prints as `host="…"`.)

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

pub const KEEP_LOG_FILES: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub debug: bool,
    pub trace: bool,
    /// Only errors on screen unless --debug/--trace (k0sctl does this for `kubeconfig`).
    pub quiet: bool,
    /// Write a per-run log file.
    pub log_file: bool,
    /// The command can show the live display ([`crate::display`]); it is used only on a
    /// terminal and not with `--debug`/`--trace` or `quiet`.
    pub progress: bool,
}

/// Installs the global subscriber; returns the log file's path when one was created.
pub fn init(s: Settings) -> Option<PathBuf> {
    let screen_level = if s.trace {
        LevelFilter::TRACE
    } else if s.debug {
        LevelFilter::DEBUG
    } else if s.quiet {
        LevelFilter::ERROR
    } else {
        LevelFilter::INFO
    };
    let tty = io::stderr().is_terminal();
    let display =
        (s.progress && tty && !(s.debug || s.trace || s.quiet)).then(crate::display::install);
    let writer = if display.is_some() {
        BoxMakeWriter::new(crate::display::DisplayWriter)
    } else {
        BoxMakeWriter::new(io::stderr)
    };
    let screen = tracing_subscriber::fmt::layer()
        .fmt_fields(HostFields)
        .with_writer(writer)
        .with_ansi(tty)
        .with_target(s.debug || s.trace);
    // Timestamps on a terminal only when debugging; always in plain (CI) output.
    let screen = if tty && !(s.debug || s.trace) {
        screen.without_time().with_filter(screen_level).boxed()
    } else {
        screen.with_filter(screen_level).boxed()
    };

    let (file_layer, path) = if s.log_file {
        match open_log_file() {
            Ok((file, path)) => {
                let level = if s.trace {
                    LevelFilter::TRACE
                } else {
                    LevelFilter::DEBUG
                };
                let layer = tracing_subscriber::fmt::layer()
                    .fmt_fields(HostFields)
                    .with_writer(Mutex::new(file))
                    .with_ansi(false)
                    .with_filter(level)
                    .boxed();
                (Some(layer), Some(path))
            }
            Err(e) => {
                eprintln!("warning: can't create a log file: {e}");
                (None, None)
            }
        }
    } else {
        (None, None)
    };

    // Only our own crate logs at debug; dependencies stay at warn unless tracing.
    let deps = if s.trace {
        LevelFilter::TRACE
    } else {
        LevelFilter::WARN
    };
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("k0sctl", LevelFilter::TRACE)
        .with_default(deps);
    let _ = tracing_subscriber::registry()
        .with(targets)
        .with(screen)
        .with(file_layer)
        .with(display.map(DisplayLayer::new))
        .try_init();
    if let Some(p) = &path {
        tracing::debug!("###### New session ###### log file {}", p.display());
    }
    path
}

/// The field that names the host a log line is about (as the run names it, `address:port`,
/// or as its connection does, `user@address:port`).
pub const ABOUT: &str = "about";

/// The fields of a log line as tracing's default format writes them, except that a line with
/// an [`ABOUT`] field and a message reads `<host>: <message>`: the host is written where the
/// message starts, as part of it, and not again as `about=…`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFields;

/// What the first pass over a line's fields finds: the host, and whether there is a message.
struct HostOf {
    host: Option<String>,
    message: bool,
}

impl Visit for HostOf {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == ABOUT {
            self.host = Some(value.to_string());
        }
        self.message |= field.name() == "message";
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == ABOUT {
            self.host = Some(format!("{value:?}"));
        }
        self.message |= field.name() == "message";
    }
}

/// Tracing's default field visitor with the host moved into the message.
struct Prefixed<'h, 'w> {
    host: &'h str,
    inner: DefaultVisitor<'w>,
}

impl Visit for Prefixed<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            ABOUT => {}
            "message" => self
                .inner
                .record_str(field, &format!("{}: {value}", self.host)),
            _ => self.inner.record_str(field, value),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match field.name() {
            ABOUT => {}
            "message" => self.record_debug(field, &format_args!("{value}")),
            _ => self.inner.record_error(field, value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            ABOUT => {}
            "message" => self
                .inner
                .record_debug(field, &format_args!("{}: {value:?}", self.host)),
            _ => self.inner.record_debug(field, value),
        }
    }
}

impl<'writer> FormatFields<'writer> for HostFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut found = HostOf {
            host: None,
            message: false,
        };
        fields.record(&mut found);
        match found.host {
            Some(host) if found.message => {
                let mut v = Prefixed {
                    host: &host,
                    inner: DefaultVisitor::new(writer, true),
                };
                fields.record(&mut v);
                v.inner.finish()
            }
            _ => {
                let mut v = DefaultVisitor::new(writer, true);
                fields.record(&mut v);
                v.finish()
            }
        }
    }
}

/// Feeds the info, warning and error lines about one host (those with an [`ABOUT`] field) to
/// the live display: the host from the field, the action from the message.
#[derive(Clone, Copy)]
pub struct DisplayLayer {
    display: &'static crate::display::Display,
}

impl DisplayLayer {
    pub fn new(display: &'static crate::display::Display) -> Self {
        Self { display }
    }
}

/// A log line's message and `about` field.
#[derive(Default)]
struct HostLine {
    message: String,
    host: Option<String>,
}

impl Visit for HostLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            ABOUT => self.host = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message.push_str(&format!("{value:?}")),
            ABOUT => self.host = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for DisplayLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > Level::INFO {
            return;
        }
        let mut line = HostLine::default();
        event.record(&mut line);
        if let Some(host) = &line.host {
            self.display.on_host_line(host, &line.message);
        }
    }
}

/// The directory for log files: `$XDG_CACHE_HOME/k0sctl/logs` (`~/.cache/k0sctl/logs`).
pub fn log_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir);
    base.join("k0sctl").join("logs")
}

fn open_log_file() -> io::Result<(File, PathBuf)> {
    let dir = log_dir();
    fs::create_dir_all(&dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "k0sctl-{}-{}.log",
        utc_stamp(now.as_secs()),
        std::process::id()
    );
    let path = dir.join(name);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    prune(&dir, KEEP_LOG_FILES);
    Ok((file, path))
}

/// Removes all but the newest `keep` log files (names sort by time).
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("k0sctl-") && n.ends_with(".log"))
        })
        .collect();
    logs.sort();
    if logs.len() > keep {
        for p in &logs[..logs.len() - keep] {
            let _ = fs::remove_file(p);
        }
    }
}

/// `20261122T035012Z` for a Unix time (UTC), without a date crate.
pub fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// RFC 3339 UTC time (`2026-11-22T03:50:12Z`) for a Unix time, without a date crate.
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What a subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines `f` logs, formatted as the screen formats them (with or without colours and
    /// the target), with our field formatter or tracing's default one.
    fn formatted(ansi: bool, target: bool, host_fields: bool, f: impl FnOnce()) -> String {
        let out = Captured::default();
        let w = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || w.clone())
            .with_ansi(ansi)
            .with_target(target)
            .without_time();
        if host_fields {
            let sub = tracing_subscriber::registry().with(layer.fmt_fields(HostFields));
            tracing::subscriber::with_default(sub, f);
        } else {
            let sub = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(sub, f);
        }
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// A line with an `about` field prints byte for byte what the same line with the host written
    /// at the start of its text printed (in colour or not, with the target or not, with more
    /// fields, over several lines); lines without one print as tracing prints them.
    #[test]
    fn the_about_field_prints_as_the_lines_host_prefix() {
        let h = "10.0.0.1:22".to_string();
        let n = 3;
        for (ansi, target) in [(false, false), (true, false), (false, true), (true, true)] {
            let with_field = formatted(ansi, target, true, || {
                tracing::info!(about = %h, "connected");
                tracing::warn!(about = %h, "uploading {n} files\nremote stderr:\n  x");
                tracing::error!(about = %h, n, "failed");
                tracing::info!(about = "root@10.0.0.2:22", "is running Ubuntu 22.04");
                tracing::info!("==> Running phase: Connect to hosts");
                tracing::info!(n, "no host");
                tracing::debug!(host = "root@10.0.0.2:22", cmd = %"true", "exec");
            });
            let in_text = formatted(ansi, target, false, || {
                tracing::info!("{h}: connected");
                tracing::warn!("{h}: uploading {n} files\nremote stderr:\n  x");
                tracing::error!(n, "{h}: failed");
                tracing::info!("root@10.0.0.2:22: is running Ubuntu 22.04");
                tracing::info!("==> Running phase: Connect to hosts");
                tracing::info!(n, "no host");
                tracing::debug!(host = "root@10.0.0.2:22", cmd = %"true", "exec");
            });
            assert_eq!(with_field, in_text, "ansi {ansi}, target {target}");
            assert!(
                with_field.contains("10.0.0.1:22: connected"),
                "{with_field}"
            );
            assert!(!with_field.contains("about="), "{with_field}");
            // The transport's `host` field is not the prefix.
            assert!(
                ansi || with_field.contains("exec host=\"root@10.0.0.2:22\" cmd=true"),
                "{with_field}"
            );
        }
    }

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_315_812), "20261122T025012Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(rfc3339(1_795_315_812), "2026-11-22T02:50:12Z");
    }

    #[test]
    fn prune_keeps_newest() {
        let d = tempfile::tempdir().unwrap();
        for i in 0..5 {
            fs::write(
                d.path().join(format!("k0sctl-2026010{i}T000000Z-1.log")),
                "",
            )
            .unwrap();
        }
        fs::write(d.path().join("other.txt"), "").unwrap();
        prune(d.path(), 2);
        let mut left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "k0sctl-20260103T000000Z-1.log",
                "k0sctl-20260104T000000Z-1.log",
                "other.txt"
            ]
        );
    }
}
