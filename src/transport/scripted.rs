//! A scripted transport for unit tests: a [`Connection`](super::Connection) that answers the
//! commands a test expects with the output the test gives, records everything that ran (in
//! order, with its stdin) and keeps uploaded files in memory. No network, no sshd, no host.
//!
//! Rules are matched against the final command text (what a real transport would execute; the
//! test hosts are "root", so nothing is wrapped in sudo). The most recently added rule that
//! matches wins, so a test can override a kit's default; a rule may be limited to a number of
//! uses ([`Rule::remaining`]). A command no rule matches panics, naming the command and the rules
//! (unless [`Script::otherwise`] gave a fallback): a test never passes because a command was
//! silently answered.
//!
//! The upload protocol of [`Remote::upload`](super::Remote::upload) (stream into a temp file
//! and print its SHA-256, then `chmod`/`chown`/`mv -f` into place; with
//! [`Remote::upload_bytes`](super::Remote::upload_bytes) all in one command), `cat -- <path>` reads,
//! downloads ([`Remote::download`](super::Remote::download)), `stat` and `rm -f -- <temp>` are
//! understood without rules, against the in-memory files ([`Script::file`] adds one);
//! [`Script::uploads`] lists what was installed (path, mode, owner, bytes). A rule for the same
//! command takes precedence, e.g. to make an upload fail.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{ExecRequest, ExitStatus, Output, Stdin, StreamKind, Transport, TransportError};

/// How a rule recognises a command.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// The whole command text.
    Exact(String),
    /// The command contains this text.
    Contains(String),
    /// The command contains every one of these texts.
    All(Vec<String>),
}

impl Pattern {
    fn matches(&self, cmd: &str) -> bool {
        match self {
            Pattern::Exact(s) => cmd == s,
            Pattern::Contains(s) => cmd.contains(s.as_str()),
            Pattern::All(v) => v.iter().all(|s| cmd.contains(s.as_str())),
        }
    }
}

/// What a matched command answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Exit with `code`, printing `stdout` and `stderr`.
    Exit {
        code: u32,
        stdout: String,
        stderr: String,
    },
    /// The connection drops while the command runs.
    Lost,
}

impl Reply {
    /// Exit 0 with this stdout.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Reply::Exit {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    /// Exit `code` with this stderr.
    pub fn fail(code: u32, stderr: impl Into<String>) -> Self {
        Reply::Exit {
            code,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }
}

/// One expectation: a pattern, its reply, and how often it may still be used.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: Pattern,
    pub reply: Reply,
    /// `None`: any number of times.
    pub remaining: Option<usize>,
}

/// A command that ran, as the transport saw it.
#[derive(Debug, Clone)]
pub struct Ran {
    pub command: String,
    pub stdin: Vec<u8>,
}

/// A file installed by the upload protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub path: String,
    pub mode: u32,
    pub owner: Option<String>,
    pub bytes: Vec<u8>,
}

impl Upload {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    otherwise: Option<Reply>,
    ran: Vec<Ran>,
    /// Temp files of uploads in flight.
    pending: BTreeMap<String, Vec<u8>>,
    files: BTreeMap<String, (u32, Vec<u8>)>,
    uploads: Vec<Upload>,
}

/// The test's handle on a scripted host: add rules, read what ran. Cheap to clone; every clone
/// (and the connection made from it) shares the same script.
#[derive(Clone, Default)]
pub struct Script {
    inner: Arc<Mutex<Inner>>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a rule (the last added matching rule wins).
    pub fn rule(&self, pattern: Pattern, reply: Reply, times: Option<usize>) -> &Self {
        self.lock().rules.push(Rule {
            pattern,
            reply,
            remaining: times,
        });
        self
    }

    /// Commands containing `needle` exit 0 with `stdout`.
    pub fn on(&self, needle: &str, stdout: &str) -> &Self {
        self.rule(Pattern::Contains(needle.into()), Reply::ok(stdout), None)
    }

    /// Commands containing `needle` exit 0 with `stdout`, the next `times` times only.
    pub fn on_times(&self, needle: &str, stdout: &str, times: usize) -> &Self {
        self.rule(
            Pattern::Contains(needle.into()),
            Reply::ok(stdout),
            Some(times),
        )
    }

    /// Commands containing every one of `needles` exit 0 with `stdout`.
    pub fn on_all(&self, needles: &[&str], stdout: &str) -> &Self {
        self.rule(
            Pattern::All(needles.iter().map(|s| s.to_string()).collect()),
            Reply::ok(stdout),
            None,
        )
    }

    /// Commands containing `needle` exit `code` with `stderr`.
    pub fn fail(&self, needle: &str, code: u32, stderr: &str) -> &Self {
        self.rule(
            Pattern::Contains(needle.into()),
            Reply::fail(code, stderr),
            None,
        )
    }

    /// Commands containing `needle` exit `code` with `stderr`, the next `times` times only.
    pub fn fail_times(&self, needle: &str, code: u32, stderr: &str, times: usize) -> &Self {
        self.rule(
            Pattern::Contains(needle.into()),
            Reply::fail(code, stderr),
            Some(times),
        )
    }

    /// Commands containing `needle` lose the connection.
    pub fn lose(&self, needle: &str) -> &Self {
        self.rule(Pattern::Contains(needle.into()), Reply::Lost, None)
    }

    /// The reply for commands no rule matches (instead of a panic).
    pub fn otherwise(&self, reply: Reply) -> &Self {
        self.lock().otherwise = Some(reply);
        self
    }

    /// A file the host already has (for `cat --` and `stat`).
    pub fn file(&self, path: &str, mode: u32, content: &str) -> &Self {
        self.lock()
            .files
            .insert(path.into(), (mode, content.as_bytes().to_vec()));
        self
    }

    /// Every command that ran, in order.
    pub fn ran(&self) -> Vec<Ran> {
        self.lock().ran.clone()
    }

    /// The command texts that ran, in order.
    pub fn commands(&self) -> Vec<String> {
        self.lock().ran.iter().map(|r| r.command.clone()).collect()
    }

    /// The commands that ran and contain `needle`.
    pub fn ran_matching(&self, needle: &str) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| c.contains(needle))
            .collect()
    }

    /// Whether a command containing `needle` ran.
    pub fn has_run(&self, needle: &str) -> bool {
        !self.ran_matching(needle).is_empty()
    }

    /// Position of the first command containing `needle` (panics, listing what ran, if none).
    pub fn position(&self, needle: &str) -> usize {
        let cmds = self.commands();
        cmds.iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no command containing {needle:?} ran; ran:\n{cmds:#?}"))
    }

    /// Files installed by uploads, in order.
    pub fn uploads(&self) -> Vec<Upload> {
        self.lock().uploads.clone()
    }

    /// The last upload installed at `path`, if any.
    pub fn uploaded(&self, path: &str) -> Option<Upload> {
        self.uploads().into_iter().rev().find(|u| u.path == path)
    }

    /// Forget what ran and what was uploaded (the rules and files stay).
    pub fn clear_record(&self) {
        let mut g = self.lock();
        g.ran.clear();
        g.uploads.clear();
    }

    /// The reply of the last matching rule for `command`, recorded like a command; `None` when
    /// no rule matches (no built-in, no `otherwise`, no panic).
    fn answer_opt(&self, command: &str) -> Option<Reply> {
        let mut g = self.lock();
        g.ran.push(Ran {
            command: command.to_string(),
            stdin: Vec::new(),
        });
        let rule = g
            .rules
            .iter_mut()
            .rev()
            .find(|r| r.remaining != Some(0) && r.pattern.matches(command))?;
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
        }
        Some(rule.reply.clone())
    }

    fn answer(&self, host: &str, command: &str, stdin: Vec<u8>) -> Reply {
        let mut g = self.lock();
        g.ran.push(Ran {
            command: command.to_string(),
            stdin: stdin.clone(),
        });
        if let Some(rule) = g
            .rules
            .iter_mut()
            .rev()
            .find(|r| r.remaining != Some(0) && r.pattern.matches(command))
        {
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            return rule.reply.clone();
        }
        if let Some(r) = builtin(&mut g, command, stdin) {
            return r;
        }
        if let Some(r) = &g.otherwise {
            return r.clone();
        }
        let rules: Vec<String> = g.rules.iter().map(|r| format!("{:?}", r.pattern)).collect();
        drop(g);
        panic!(
            "scripted host {host}: unexpected command (no rule matches):\n{command}\nrules:\n{}",
            rules.join("\n")
        );
    }
}

/// Undo [`super::shell_quote`] for one word.
fn unquote(s: &str) -> String {
    match s.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(inner) => inner.replace(r"'\''", "'"),
        None => s.to_string(),
    }
}

/// The next shell word of `s` (a quoted or a plain one) and the rest.
fn word(s: &str) -> (String, &str) {
    let s = s.trim_start();
    if s.starts_with('\'') {
        // A quoted word ends at a quote not followed by `\''`.
        let b = s.as_bytes();
        let mut i = 1;
        while i < b.len() {
            if b[i] == b'\'' {
                if s[i..].starts_with(r"'\''") {
                    i += 4;
                    continue;
                }
                return (unquote(&s[..=i]), &s[i + 1..]);
            }
            i += 1;
        }
        (unquote(s), "")
    } else {
        let end = s.find([' ', ';']).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

/// The commands of the file protocol ([`super::files`]).
fn builtin(g: &mut Inner, cmd: &str, stdin: Vec<u8>) -> Option<Reply> {
    // `Remote::upload_bytes`: the temp file, its digest check and the move into place (and
    // whatever comes after, which is only recorded) in one command.
    if let Some((_, rest)) = cmd.split_once("umask 077; cat > ")
        && cmd.contains("\ngot=$(")
    {
        let (tmp, _) = word(rest);
        let (_, fin) = cmd.split_once("\nchmod ")?;
        g.pending.insert(tmp, stdin);
        return builtin(g, &format!("chmod {fin}"), Vec::new());
    }
    if let Some((_, rest)) = cmd.split_once("umask 077; cat > ") {
        let (tmp, _) = word(rest);
        let digest = hex::encode(Sha256::digest(&stdin));
        g.pending.insert(tmp, stdin);
        return Some(Reply::ok(digest));
    }
    if let Some(rest) = cmd.strip_prefix("chmod ")
        && cmd.contains(" && mv -f ")
    {
        let (mode, rest) = word(rest);
        let (tmp, _) = word(rest);
        let owner = cmd.split_once(" && chown ").map(|(_, r)| word(r).0);
        let (_, after_mv) = cmd.split_once(" && mv -f ")?;
        let (_, after_tmp) = word(after_mv);
        let (dst, _) = word(after_tmp);
        let mode = u32::from_str_radix(&mode, 8).ok()?;
        let Some(bytes) = g.pending.remove(&tmp) else {
            return Some(Reply::fail(1, format!("mv: cannot stat '{tmp}'")));
        };
        g.files.insert(dst.clone(), (mode, bytes.clone()));
        g.uploads.push(Upload {
            path: dst,
            mode,
            owner,
            bytes,
        });
        return Some(Reply::ok(""));
    }
    if let Some(rest) = cmd.strip_prefix("rm -f -- ") {
        let (p, _) = word(rest);
        if p.contains(".tmp.") {
            g.pending.remove(&p);
            return Some(Reply::ok(""));
        }
    }
    if let Some(rest) = cmd.strip_prefix("cat -- ") {
        let (p, rest) = word(rest);
        if rest.starts_with(" && (openssl dgst -sha256 -r ") {
            // A download: the bytes on stdout, their SHA-256 on stderr.
            return Some(match g.files.get(&p) {
                Some((_, b)) => Reply::Exit {
                    code: 0,
                    stdout: String::from_utf8_lossy(b).into_owned(),
                    stderr: hex::encode(Sha256::digest(b)),
                },
                None => Reply::fail(1, format!("cat: {p}: No such file or directory")),
            });
        }
        if rest.trim().is_empty() {
            return Some(match g.files.get(&p) {
                Some((_, b)) => Reply::ok(String::from_utf8_lossy(b).into_owned()),
                None => Reply::fail(1, format!("cat: {p}: No such file or directory")),
            });
        }
    }
    if let Some(rest) = cmd.strip_prefix("if [ -e ")
        && cmd.contains("stat -c '%s %a %u %g %Y %F'")
    {
        let (p, _) = word(rest);
        return Some(match g.files.get(&p) {
            Some((mode, b)) => Reply::ok(format!("{} {mode:o} 0 0 0 regular file", b.len())),
            None => Reply::ok("missing"),
        });
    }
    None
}

/// The connection side of a [`Script`].
pub struct ScriptedConnection {
    name: String,
    script: Script,
}

impl ScriptedConnection {
    pub fn new(name: impl Into<String>, script: Script) -> Self {
        ScriptedConnection {
            name: name.into(),
            script,
        }
    }
}

impl ScriptedConnection {
    /// A tunnel or exec stream asked of a scripted host: the script sees the pseudo-command
    /// `open <what>` (e.g. `open tunnel to 127.0.0.1:6443`); a `lose` rule makes it fail as a
    /// lost connection would, anything else fails as "no tunnels here" (no bytes are carried).
    pub(crate) fn open_stream(&self, what: &str) -> TransportError {
        match self.script.answer_opt(&format!("open {what}")) {
            Some(Reply::Lost) => TransportError::Disconnected {
                host: self.name.clone(),
                reason: format!("the scripted host dropped the connection while opening {what}"),
            },
            _ => TransportError::io(
                &self.name,
                format!("open {what}"),
                "the scripted test transport carries no streams",
            ),
        }
    }
}

impl Transport for ScriptedConnection {
    async fn exec(&self, req: ExecRequest) -> Result<Output, TransportError> {
        let mut stdin = Vec::new();
        match req.stdin {
            Stdin::Null => {}
            Stdin::Bytes(b) => stdin = b,
            Stdin::Reader(mut r) => {
                r.read_to_end(&mut stdin)
                    .await
                    .map_err(|e| TransportError::io(&self.name, "read stdin", e))?;
            }
        }
        match self.script.answer(&self.name, &req.command, stdin) {
            Reply::Lost => Err(TransportError::Disconnected {
                host: self.name.clone(),
                reason: format!(
                    "the scripted host dropped the connection{}",
                    super::error::doing(&req.display)
                ),
            }),
            Reply::Exit {
                code,
                stdout,
                stderr,
            } => {
                if let Some(cb) = &req.on_output {
                    if !stdout.is_empty() {
                        cb(StreamKind::Stdout, stdout.as_bytes());
                    }
                    if !stderr.is_empty() {
                        cb(StreamKind::Stderr, stderr.as_bytes());
                    }
                }
                Ok(Output {
                    stdout: if req.discard_stdout {
                        Vec::new()
                    } else {
                        stdout.into_bytes()
                    },
                    stderr: stderr.into_bytes(),
                    status: ExitStatus::Code(code),
                })
            }
        }
    }
    fn name(&self) -> &str {
        &self.name
    }
    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Cmd, Connection, Limits, Privilege, Remote};

    fn remote(s: &Script) -> Remote {
        let c = Connection::Scripted(ScriptedConnection::new("h1", s.clone()));
        let mut r = Remote::new(Arc::new(c), Arc::new(Limits::default()));
        r.set_privilege(Privilege::Root);
        r
    }

    #[tokio::test]
    async fn answers_rules_and_records_in_order() {
        let s = Script::new();
        s.on("hostname", "node-1\n")
            .fail("systemctl start", 3, "unit not found");
        let r = remote(&s);
        assert_eq!(r.run_str("hostname").await.unwrap(), "node-1");
        let e = r
            .run(Cmd::new("systemctl start k0sworker").sudo())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("unit not found"), "{e}");
        assert!(e.contains("systemctl start k0sworker"), "{e}");
        assert_eq!(s.commands(), ["hostname", "systemctl start k0sworker"]);
    }

    #[tokio::test]
    async fn latest_rule_wins_and_times_run_out() {
        let s = Script::new();
        s.on("k0s status", "old").on_times("k0s status", "new", 1);
        let r = remote(&s);
        assert_eq!(r.run_str("k0s status").await.unwrap(), "new");
        assert_eq!(r.run_str("k0s status").await.unwrap(), "old");
    }

    #[tokio::test]
    async fn uploads_are_captured_and_readable() {
        let s = Script::new();
        let r = remote(&s);
        r.write_file("/etc/k0s/it's.yaml", "a: 1\n", 0o600, true)
            .await
            .unwrap();
        let u = s.uploaded("/etc/k0s/it's.yaml").unwrap();
        assert_eq!((u.mode, u.text().as_str()), (0o600, "a: 1\n"));
        let back = r.read_file("/etc/k0s/it's.yaml", true).await.unwrap();
        assert_eq!(back, b"a: 1\n");
        let st = r.stat("/etc/k0s/it's.yaml", true).await.unwrap().unwrap();
        assert_eq!((st.size, st.mode), (5, 0o600));
        assert!(r.stat("/nope", true).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_rule_can_fail_an_upload() {
        let s = Script::new();
        s.fail("cat > /etc/x.tmp.", 1, "No space left on device");
        let r = remote(&s);
        let e = r
            .write_file("/etc/x", "data", 0o644, true)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert!(s.uploads().is_empty());
    }

    #[tokio::test]
    #[should_panic(expected = "unexpected command (no rule matches):\nrm -rf /")]
    async fn unexpected_commands_panic_naming_the_command() {
        let s = Script::new();
        s.on("true", "");
        let _ = remote(&s).exec("rm -rf /").await;
    }
}
