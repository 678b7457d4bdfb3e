//! Localhost transport (`localhost: true`): commands run with `sh -c` on this machine. Also
//! holds the child-process runner the OpenSSH transport shares.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    ExecRequest, ExitStatus, IO_CHUNK, OutputCallback, StreamKind, Transport, TransportError,
    pump_stdin,
};

/// Runs commands on the local machine.
pub struct LocalConnection {
    name: String,
}

impl LocalConnection {
    pub fn new() -> Self {
        LocalConnection {
            name: "localhost".into(),
        }
    }
}

impl Default for LocalConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport for LocalConnection {
    async fn exec(&self, req: ExecRequest) -> Result<super::Output, TransportError> {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(&req.command);
        run_child(&self.name, c, req).await
    }
    fn name(&self) -> &str {
        &self.name
    }
    async fn close(&self) {}
}

async fn drain<R: AsyncRead + Unpin>(
    mut r: R,
    kind: StreamKind,
    cb: Option<OutputCallback>,
    keep: bool,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        if let Some(cb) = &cb {
            cb(kind, &buf[..n]);
        }
        if keep {
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// Spawn `cmd` with piped stdio, feed stdin (ignoring EPIPE when the child exits early),
/// capture/stream output, honour the timeout (the child is killed).
pub(crate) async fn run_child(
    host: &str,
    mut cmd: tokio::process::Command,
    req: ExecRequest,
) -> Result<super::Output, TransportError> {
    let has_stdin = req.stdin_prefix.is_some() || !matches!(req.stdin, super::Stdin::Null);
    cmd.stdin(if has_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true)
    // Own process group, so a timeout kills the whole tree, not just `sh`.
    .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| TransportError::io(host, format!("spawn {}", req.display), e))?;
    let child_pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (prefix, input) = (req.stdin_prefix, req.stdin);
    let writer = tokio::spawn(async move {
        if let Some(mut w) = stdin {
            // EPIPE when the child exits without reading: not our error, the exit status tells.
            let _ = pump_stdin(&mut w, prefix, input).await;
        }
    });
    let work = async {
        let (o, e, st) = tokio::join!(
            drain(
                stdout,
                StreamKind::Stdout,
                req.on_output.clone(),
                !req.discard_stdout
            ),
            drain(stderr, StreamKind::Stderr, req.on_output.clone(), true),
            child.wait()
        );
        (o, e, st)
    };
    let res = match req.timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => {
                writer.abort();
                if let Some(pid) = child_pid {
                    // SAFETY: signalling the process group we created for this child.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                return Err(TransportError::Timeout {
                    host: host.to_string(),
                    cmd: req.display,
                    after: t,
                });
            }
        },
        None => work.await,
    };
    writer.abort();
    let (o, e, st) = res;
    let st = st.map_err(|e| TransportError::io(host, format!("wait {}", req.display), e))?;
    let status = match st.code() {
        Some(c) => ExitStatus::Code(c as u32),
        None => {
            use std::os::unix::process::ExitStatusExt;
            ExitStatus::Signal(st.signal().map(|s| s.to_string()).unwrap_or_default())
        }
    };
    Ok(super::Output {
        stdout: o.map_err(|e| TransportError::io(host, "read stdout", e))?,
        stderr: e.map_err(|e| TransportError::io(host, "read stderr", e))?,
        status,
    })
}
