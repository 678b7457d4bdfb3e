//! The live terminal display of `apply`, `reset` and `backup`: a spinner with the current
//! phase, one line per host with its latest action (a byte bar while a binary is uploaded),
//! the log lines printed above them, and a phase timing table at the end.
//!
//! The phases know nothing of it. It is fed by the run's structured events, the same ones
//! `--output json` prints ([`on_event`]: `phase_start`, `cleanup_start`, `change`), by a
//! callback for upload byte progress, and, for the hosts' latest actions, by the log lines
//! about one host: those carry the host in their [`crate::logging::ABOUT`] field and the action
//! as their message ([`crate::logging::DisplayLayer`] passes them to [`Display::on_host_line`]);
//! the text of a line is never searched for a host. It is
//! only installed on a terminal without `--debug`/`--trace` and without `--output json` (see
//! [`crate::logging`]); everywhere else the output is the plain lines, unchanged. While it is installed, log lines are written through
//! [`DisplayWriter`], which takes the bars off the screen for the moment it writes, so lines
//! are never garbled; [`suspend`] does the same for prompts and [`finish`] clears the bars for
//! good.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use indicatif::{
    HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};
use tracing_subscriber::fmt::MakeWriter;

/// Which of `hosts` (as the phases name them, `address:port`) a log line's `about` field names:
/// the host itself, or its connection (`user@address:port`, as the transport names it).
fn host_index(host: &str, hosts: &[String]) -> Option<usize> {
    hosts.iter().position(|h| h == host).or_else(|| {
        let (user, rest) = host.split_once('@')?;
        (!user.is_empty())
            .then(|| hosts.iter().position(|h| h == rest))
            .flatten()
    })
}

/// A duration for the timing table: `0.42s`, `12.3s`, `2m05s`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let secs = d.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// The phase timing table: a header, one line per phase that ran (in order) with its
/// duration right-aligned, and the total.
pub fn timings_table(phases: &[(&str, Duration)]) -> String {
    let width = phases
        .iter()
        .map(|(t, _)| t.chars().count())
        .max()
        .unwrap_or(0)
        .max("Total".len());
    let mut out = String::from("==> Phase timings:\n");
    for (title, d) in phases {
        let _ = writeln!(out, "    {title:<width$}  {:>8}", format_duration(*d));
    }
    let total: Duration = phases.iter().map(|(_, d)| *d).sum();
    let _ = writeln!(
        out,
        "    {:<width$}  {:>8}",
        "Total",
        format_duration(total)
    );
    out
}

fn phase_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg:.bold} {elapsed:.dim}")
        .expect("phase template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn host_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:.bold} {wide_msg}").expect("host template")
}

fn upload_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {prefix:.bold} [{bar:24.cyan/blue}] {bytes}/{total_bytes} {rate} {wide_msg}",
    )
    .expect("upload template")
    .progress_chars("=> ")
    // The average since the upload started: the first chunk is read ahead of the network, so
    // indicatif's own estimate starts out at many GiB/s.
    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let secs = s.elapsed().as_secs_f64();
        if secs >= 0.5 {
            let _ = write!(w, "{}/s", HumanBytes((s.pos() as f64 / secs) as u64));
        }
    })
}

#[derive(Default)]
struct Inner {
    hosts: Vec<String>,
    phase: Option<ProgressBar>,
    bars: Vec<ProgressBar>,
    uploading: Vec<bool>,
    /// The line for the hosts beyond [`Display::max_host_lines`].
    more: Option<ProgressBar>,
    finished: bool,
}

/// The bars and what they show.
pub struct Display {
    mp: MultiProgress,
    inner: Mutex<Inner>,
    tick: bool,
    /// At most this many host lines (the terminal's height leaves room for the log lines);
    /// further hosts are summed up in one line.
    max_host_lines: usize,
}

impl Display {
    /// A display drawing to `target` (stderr in the program, hidden in tests).
    pub fn new(target: ProgressDrawTarget) -> Self {
        let tick = !target.is_hidden();
        let max_host_lines = if tick {
            terminal_rows().map_or(20, |r| (r as usize).saturating_sub(6).max(3))
        } else {
            usize::MAX
        };
        Self {
            mp: MultiProgress::with_draw_target(target),
            inner: Mutex::new(Inner::default()),
            tick,
            max_host_lines,
        }
    }

    /// The same with at most `n` host lines.
    pub fn with_max_host_lines(mut self, n: usize) -> Self {
        self.max_host_lines = n.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hosts of the run, as the phases name them, in manifest order.
    pub fn set_hosts(&self, hosts: Vec<String>) {
        let mut g = self.lock();
        if g.phase.is_none() {
            g.hosts = hosts;
        }
    }

    /// Creates the bars at the first phase: the spinner, then a line per host.
    fn ensure_bars(&self, g: &mut Inner) {
        if g.phase.is_some() {
            return;
        }
        let pb = self
            .mp
            .add(ProgressBar::new_spinner().with_style(phase_style()));
        if self.tick {
            pb.enable_steady_tick(Duration::from_millis(100));
        }
        g.phase = Some(pb);
        let width = g.hosts.iter().map(|h| h.chars().count()).max().unwrap_or(0);
        let shown = if g.hosts.len() > self.max_host_lines {
            self.max_host_lines - 1
        } else {
            g.hosts.len()
        };
        let bars: Vec<ProgressBar> = g.hosts[..shown]
            .iter()
            .map(|h| {
                let b = ProgressBar::new(0)
                    .with_style(host_style())
                    .with_prefix(format!("{h:<width$}"))
                    .with_message("waiting");
                self.mp.add(b)
            })
            .collect();
        if shown < g.hosts.len() {
            let more = ProgressBar::new(0)
                .with_style(host_style())
                .with_prefix(format!("… and {} more hosts", g.hosts.len() - shown));
            g.more = Some(self.mp.add(more));
        }
        g.uploading = vec![false; bars.len()];
        g.bars = bars;
    }

    /// Updates the bars from one event of the run (the `--output json` schema): a phase or
    /// clean-up starts (the spinner shows its title), a host changed (its line shows what).
    pub fn on_event(&self, ev: &serde_json::Value) {
        let mut g = self.lock();
        if g.finished {
            return;
        }
        let field = |k: &str| ev.get(k).and_then(serde_json::Value::as_str);
        match field("event") {
            Some("phase_start") => {
                let title = field("phase").unwrap_or_default().to_string();
                self.ensure_bars(&mut g);
                let pb = g.phase.as_ref().expect("ensured");
                pb.set_message(title);
                pb.reset_elapsed();
            }
            Some("cleanup_start") => {
                if let Some(pb) = &g.phase {
                    pb.set_message(format!("clean-up: {}", field("phase").unwrap_or_default()));
                    pb.reset_elapsed();
                }
            }
            Some("change") => {
                let (Some(host), Some(action)) = (field("host"), field("action")) else {
                    return;
                };
                if let Some(b) = g
                    .hosts
                    .iter()
                    .position(|h| h == host)
                    .and_then(|i| g.bars.get(i))
                {
                    b.set_message(action.to_string());
                }
            }
            _ => {}
        }
    }

    /// Updates the line of `host` (a log line's `about` field) with the first line of `action`
    /// (the log line's message).
    pub fn on_host_line(&self, host: &str, action: &str) {
        let g = self.lock();
        if g.finished {
            return;
        }
        if let Some(b) = host_index(host, &g.hosts).and_then(|i| g.bars.get(i)) {
            b.set_message(action.lines().next().unwrap_or("").to_string());
        }
    }

    /// Byte progress of an upload to `host`: a byte bar while bytes flow.
    pub fn upload_progress(&self, host: &str, sent: u64, total: Option<u64>) {
        let mut g = self.lock();
        if g.finished {
            return;
        }
        let Some(i) = g.hosts.iter().position(|h| h == host) else {
            return;
        };
        let Some(b) = g.bars.get(i).cloned() else {
            return;
        };
        match total {
            Some(total) if sent >= total => {
                if g.uploading[i] {
                    g.uploading[i] = false;
                    b.set_style(host_style());
                    b.set_message(format!("sent {}, verifying", HumanBytes(total)));
                }
            }
            Some(total) => {
                if !g.uploading[i] {
                    g.uploading[i] = true;
                    b.set_style(upload_style());
                    b.set_length(total);
                    b.reset_elapsed();
                }
                b.set_position(sent);
            }
            None => b.set_message(format!("sent {}", HumanBytes(sent))),
        }
    }

    /// Runs `f` with the bars off the screen (log lines, prompts). Re-entrant: a log line
    /// written by `f` itself goes straight out (indicatif's own suspend would deadlock).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        thread_local!(static SUSPENDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if SUSPENDED.get() {
            return f();
        }
        SUSPENDED.set(true);
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                SUSPENDED.set(false);
            }
        }
        let _reset = Reset;
        self.mp.suspend(f)
    }

    /// Clears the bars for good; later messages change nothing.
    pub fn finish(&self) {
        let mut g = self.lock();
        if g.finished {
            return;
        }
        g.finished = true;
        // Off the screen in one go, then nothing draws any more.
        if let Some(pb) = &g.phase {
            pb.disable_steady_tick();
        }
        let _ = self.mp.clear();
        self.mp.set_draw_target(ProgressDrawTarget::hidden());
        if let Some(pb) = g.phase.take() {
            pb.finish_and_clear();
        }
        let more = g.more.take();
        for b in g.bars.drain(..).chain(more) {
            b.finish_and_clear();
        }
    }

    /// What the bars show: (phase message, per-host (message, upload position/length)).
    #[cfg(test)]
    fn snapshot(&self) -> Snapshot {
        let g = self.lock();
        let phase = g.phase.as_ref().map(|p| p.message());
        let hosts = g
            .bars
            .iter()
            .zip(&g.uploading)
            .map(|(b, up)| {
                (
                    b.message(),
                    up.then(|| (b.position(), b.length().unwrap_or(0))),
                )
            })
            .collect();
        (phase, hosts)
    }
}

/// The height of the terminal on stderr, if it is one.
fn terminal_rows() -> Option<u16> {
    // SAFETY: winsize is plain data, filled by the ioctl on a valid descriptor.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some(ws.ws_row)
}

#[cfg(test)]
type Snapshot = (Option<String>, Vec<(String, Option<(u64, u64)>)>);

static DISPLAY: OnceLock<Display> = OnceLock::new();

/// Installs the process's display on stderr (by [`crate::logging::init`]).
pub fn install() -> &'static Display {
    DISPLAY.get_or_init(|| Display::new(ProgressDrawTarget::stderr()))
}

/// True when the live display is in use (a terminal, not debugging, not JSON).
pub fn enabled() -> bool {
    DISPLAY.get().is_some()
}

/// The hosts of the run (see [`Display::set_hosts`]); nothing without a display.
pub fn set_hosts(hosts: Vec<String>) {
    if let Some(d) = DISPLAY.get() {
        d.set_hosts(hosts);
    }
}

/// One event of the run (see [`Display::on_event`]); nothing without a display.
pub fn on_event(ev: &serde_json::Value) {
    if let Some(d) = DISPLAY.get() {
        d.on_event(ev);
    }
}

/// Upload byte progress for a host (see [`Display::upload_progress`]).
pub fn upload_progress(host: &str, sent: u64, total: Option<u64>) {
    if let Some(d) = DISPLAY.get() {
        d.upload_progress(host, sent, total);
    }
}

/// Runs `f` with the bars off the screen, e.g. around an interactive prompt.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match DISPLAY.get() {
        Some(d) => d.suspend(f),
        None => f(),
    }
}

/// Clears the bars for good (before final reports, errors and stdout output).
pub fn finish() {
    if let Some(d) = DISPLAY.get() {
        d.finish();
    }
}

/// Writes log lines to stderr with the bars stepped aside (one event is one write).
#[derive(Debug, Clone, Copy, Default)]
pub struct DisplayWriter;

impl Write for DisplayWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        suspend(|| io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for DisplayWriter {
    type Writer = DisplayWriter;

    fn make_writer(&'a self) -> Self::Writer {
        DisplayWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec![
            "10.0.0.1:22".into(),
            "10.0.0.1:2222".into(),
            "admin@node".into(),
        ]
    }

    #[test]
    fn resolves_the_host_field() {
        let h = hosts();
        assert_eq!(host_index("10.0.0.1:22", &h), Some(0));
        assert_eq!(host_index("10.0.0.1:2222", &h), Some(1));
        assert_eq!(host_index("admin@node", &h), Some(2));
        // A connection names itself `user@address:port`.
        assert_eq!(host_index("root@10.0.0.1:2222", &h), Some(1));
        // Not a host of the run.
        assert_eq!(host_index("root@10.0.0.9:22", &h), None);
        assert_eq!(host_index("@10.0.0.1:22", &h), None);
        assert_eq!(host_index("10.0.0.9:22", &h), None);
        assert_eq!(host_index("10.0.0.1", &h), None);
        assert_eq!(host_index("", &h), None);
    }

    /// Through the tracing layer: a log line moves a host's line by its `about` field only. A
    /// line that names a host only in its text (`<host>: <action>`) changes nothing: the
    /// display does not parse log text.
    #[test]
    fn host_lines_come_from_the_about_field_never_from_the_text() {
        use tracing_subscriber::layer::SubscriberExt;
        let d: &'static Display = Box::leak(Box::new(Display::new(ProgressDrawTarget::hidden())));
        d.set_hosts(hosts());
        d.on_event(&phase_start("Connect to hosts"));
        let waiting = || ("waiting".to_string(), None);
        let sub = tracing_subscriber::registry().with(crate::logging::DisplayLayer::new(d));
        tracing::subscriber::with_default(sub, || {
            tracing::info!("10.0.0.1:22: connected");
            tracing::warn!("root@10.0.0.1:2222: is running Ubuntu 22.04");
            tracing::info!("admin@node: connected");
            tracing::info!("==> Running phase: Install workers");
            assert_eq!(
                d.snapshot(),
                (
                    Some("Connect to hosts".into()),
                    vec![waiting(), waiting(), waiting()]
                )
            );
            tracing::info!(about = "10.0.0.1:22", "connected");
            tracing::warn!(
                about = %"root@10.0.0.1:2222",
                "is running {}\nremote stderr:\n  x",
                "Ubuntu 22.04"
            );
            // Below info, and hosts not of the run, change nothing.
            tracing::debug!(about = "admin@node", "a debug line");
            tracing::info!(about = "10.0.0.9:22", "connected");
            // Another field named `host` (the transport's) is not the one.
            tracing::info!(host = "admin@node", "exec");
            assert_eq!(
                d.snapshot().1,
                vec![
                    ("connected".to_string(), None),
                    ("is running Ubuntu 22.04".to_string(), None),
                    waiting()
                ]
            );
        });
    }

    fn phase_start(title: &str) -> serde_json::Value {
        serde_json::json!({"event": "phase_start", "phase": title})
    }

    #[test]
    fn durations_and_timing_table() {
        assert_eq!(format_duration(Duration::from_millis(420)), "0.42s");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
        let t = timings_table(&[
            ("Connect to hosts", Duration::from_millis(120)),
            ("Install workers", Duration::from_millis(11_500)),
        ]);
        assert_eq!(
            t,
            "==> Phase timings:\n    Connect to hosts     0.12s\n    Install workers      11.5s\n    Total                11.6s\n"
        );
        assert_eq!(
            timings_table(&[]),
            "==> Phase timings:\n    Total     0.00s\n"
        );
    }

    #[test]
    fn suspend_is_reentrant() {
        let d = Display::new(ProgressDrawTarget::hidden());
        d.on_event(&phase_start("Connect to hosts"));
        assert_eq!(d.suspend(|| d.suspend(|| 7)), 7);
        assert_eq!(d.suspend(|| 8), 8);
    }

    #[test]
    fn many_hosts_are_summed_up() {
        let d = Display::new(ProgressDrawTarget::hidden()).with_max_host_lines(2);
        d.set_hosts(hosts());
        d.on_event(&phase_start("Connect to hosts"));
        d.on_host_line("admin@node", "connected");
        d.upload_progress("admin@node", 1, Some(2));
        assert_eq!(d.snapshot().1, vec![("waiting".to_string(), None)]);
        let more = d.lock().more.as_ref().map(|b| b.prefix());
        assert_eq!(more.as_deref(), Some("… and 2 more hosts"));
        d.finish();
        assert!(d.lock().more.is_none());
    }

    #[test]
    fn bars_follow_phases_hosts_and_uploads() {
        let d = Display::new(ProgressDrawTarget::hidden());
        d.set_hosts(hosts());
        // Nothing before the first phase.
        d.on_host_line("10.0.0.1:22", "early");
        assert_eq!(d.snapshot(), (None, vec![]));
        d.on_event(&phase_start("Connect to hosts"));
        d.on_host_line("10.0.0.1:2222", "connected");
        let (phase, h) = d.snapshot();
        assert_eq!(phase.as_deref(), Some("Connect to hosts"));
        assert_eq!(
            h,
            vec![
                ("waiting".to_string(), None),
                ("connected".to_string(), None),
                ("waiting".to_string(), None)
            ]
        );
        d.on_event(&phase_start("Stage k0s binaries"));
        d.on_host_line("10.0.0.1:22", "uploading k0s binary /tmp/k0s");
        d.upload_progress("10.0.0.1:22", 100, Some(1000));
        d.upload_progress("10.0.0.1:22", 600, Some(1000));
        d.upload_progress("nobody:22", 600, Some(1000));
        let (phase, h) = d.snapshot();
        assert_eq!(phase.as_deref(), Some("Stage k0s binaries"));
        assert_eq!(
            h[0],
            (
                "uploading k0s binary /tmp/k0s".to_string(),
                Some((600, 1000))
            )
        );
        d.upload_progress("10.0.0.1:22", 1000, Some(1000));
        assert_eq!(d.snapshot().1[0], ("sent 1000 B, verifying".into(), None));
        // A change names its host as a field; a host not in the run changes nothing.
        d.on_event(&serde_json::json!({"event": "change", "host": "10.0.0.1:2222", "action": "installed k0s"}));
        d.on_event(&serde_json::json!({"event": "change", "host": "nobody:22", "action": "x"}));
        assert_eq!(d.snapshot().1[1], ("installed k0s".into(), None));
        d.on_event(
            &serde_json::json!({"event": "cleanup_start", "phase": "Acquire exclusive host lock"}),
        );
        assert_eq!(
            d.snapshot().0.as_deref(),
            Some("clean-up: Acquire exclusive host lock")
        );
        d.finish();
        assert_eq!(d.snapshot(), (None, vec![]));
        // After finishing nothing comes back.
        d.on_event(&phase_start("Disconnect from hosts"));
        assert_eq!(d.snapshot(), (None, vec![]));
    }
}
