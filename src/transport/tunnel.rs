//! TCP tunnels through an existing host connection: a byte stream to `host:port` *as the remote
//! host sees it* (e.g. its own `127.0.0.1:6443`), so a service that only the host can reach is
//! usable from this machine without opening ports or installing anything on the host.
//!
//! - native SSH: a `direct-tcpip` channel on the host's shared connection (as bastions use);
//! - OpenSSH: a child `ssh -W host:port` that reuses the host's ControlMaster when
//!   multiplexing is on; its stdin/stdout are the stream, its stderr goes to the debug log;
//! - localhost: a plain TCP connection.
//!
//! The transport does not know what runs over the stream (the Kubernetes client in
//! [`crate::kube`] is one user). Failures surface as [`TransportError`]s naming the host and
//! the target; with OpenSSH a refused target shows up as an immediate end of stream instead
//! (the `ssh` child reports it on stderr, which is logged at debug level).

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};

use super::{Connection, TransportError};

/// What a tunnel is: a bidirectional byte stream.
pub trait TunnelStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelStream for T {}

/// A TCP connection to `host:port` made by the remote host. Dropping it closes the channel
/// (and ends the `ssh -W` child).
pub type Tunnel = Box<dyn TunnelStream>;

/// `target` for messages (`host:port`, IPv6 in brackets).
fn target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) async fn open(
    conn: &Connection,
    host: &str,
    port: u16,
) -> Result<Tunnel, TransportError> {
    let what = || {
        format!(
            "open a tunnel to {} (as seen from the host)",
            target(host, port)
        )
    };
    match conn {
        Connection::Ssh(c) => {
            let h = c.handle();
            if h.is_closed() {
                return Err(closed(conn));
            }
            let ch = h
                .channel_open_direct_tcpip(host.to_string(), port as u32, "127.0.0.1", 0)
                .await
                .map_err(|e| TransportError::io(&c_name(conn), what(), e))?;
            Ok(Box::new(ch.into_stream()))
        }
        Connection::OpenSsh(c) => {
            child_stream(conn, c.stdio_forward_command(host, port), &what(), "ssh -W")
        }
        Connection::Local(_) => {
            let s = tokio::net::TcpStream::connect((host, port))
                .await
                .map_err(|e| TransportError::io("localhost", what(), e))?;
            s.set_nodelay(true).ok();
            Ok(Box::new(s))
        }
        #[cfg(test)]
        Connection::Scripted(c) => Err(c.open_stream(&format!("tunnel to {}", target(host, port)))),
    }
}

/// A byte stream to the stdin/stdout of `command` run on the host (as the login user, no
/// privilege wrapping; its stderr is discarded for native SSH and logged at debug level
/// otherwise): an exec channel (native SSH), a child `ssh … command` (OpenSSH) or a child
/// `sh -c command` (localhost). For relays that need no TCP forwarding (see
/// [`crate::kube`]). Dropping it closes the channel (ends the child).
pub(crate) async fn open_exec(conn: &Connection, command: &str) -> Result<Tunnel, TransportError> {
    let what = "open an exec channel for a stream";
    match conn {
        Connection::Ssh(c) => {
            let h = c.handle();
            if h.is_closed() {
                return Err(closed(conn));
            }
            let ch = h
                .channel_open_session()
                .await
                .map_err(|e| TransportError::io(&c_name(conn), what, e))?;
            ch.exec(true, command.as_bytes())
                .await
                .map_err(|e| TransportError::io(&c_name(conn), what, e))?;
            Ok(Box::new(ch.into_stream()))
        }
        Connection::OpenSsh(c) => {
            child_stream(conn, c.exec_stream_command(command), what, "exec stream")
        }
        Connection::Local(_) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(command);
            child_stream(conn, c, what, "exec stream")
        }
        #[cfg(test)]
        Connection::Scripted(c) => Err(c.open_stream("exec stream")),
    }
}

/// Whether the host refuses to forward to `host:port`, for transports that cannot tell at
/// open time: `ssh -W` opens its channel after the child has started, so a refusal there shows
/// only as an early end of stream plus a message on the child's stderr. This runs one
/// `ssh -W` with stdin closed and reads that stderr (an accepted forward ends when the target
/// sees the end of input). `Some(message)` when refused; `None` when accepted and for the
/// other transports (native SSH reports a refusal when the channel is opened; localhost has
/// no forwarding).
pub(crate) async fn probe_refusal(
    conn: &Connection,
    host: &str,
    port: u16,
) -> Result<Option<String>, TransportError> {
    let Connection::OpenSsh(c) = conn else {
        return Ok(None);
    };
    let mut cmd = c.stdio_forward_command(host, port);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| TransportError::io(&c_name(conn), "probe TCP forwarding", e))?;
    let err = String::from_utf8_lossy(&out.stderr);
    // Direct: "channel 0: open failed: administratively prohibited: open failed". Through a
    // ControlMaster the client only learns "Stdio forwarding request failed: Session open
    // refused by peer" (the reason stays with the master).
    Ok(err
        .lines()
        .find(|l| {
            l.contains("administratively prohibited")
                || l.contains("forwarding request failed")
                || l.contains("stdio forwarding failed")
        })
        .map(|l| format!("ssh -W: {}", l.trim())))
}

/// True when `e` is an SSH server's refusal of a `direct-tcpip` channel by policy
/// ("administratively prohibited", e.g. sshd's `AllowTcpForwarding no`).
pub fn is_forwarding_refused(e: &TransportError) -> bool {
    let m = e.to_string();
    m.contains("AdministrativelyProhibited") || m.contains("administratively prohibited")
}

fn c_name(conn: &Connection) -> String {
    use super::Transport;
    conn.name().to_string()
}

/// The stdio of an `ssh -W` child as one stream; the child is killed when this is dropped.
struct ChildStream {
    io: tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    _child: tokio::process::Child,
}

impl AsyncRead for ChildStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A child process's stdin/stdout as one stream (OpenSSH `ssh -W`/exec children, localhost
/// shells); its stderr lines are logged at debug level under `label`. Dropping the stream kills
/// the child.
fn child_stream(
    conn: &Connection,
    mut cmd: tokio::process::Command,
    what: &str,
    label: &'static str,
) -> Result<Tunnel, TransportError> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| TransportError::io(&c_name(conn), what, e))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    if let Some(err) = child.stderr.take() {
        let name = c_name(conn);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(host = %name, "{label}: {l}");
            }
        });
    }
    Ok(Box::new(ChildStream {
        io: tokio::io::join(stdout, stdin),
        _child: child,
    }))
}

/// The error for a stream asked of a connection that is already closed.
fn closed(conn: &Connection) -> TransportError {
    TransportError::Disconnected {
        host: c_name(conn),
        reason: "the SSH connection is closed".into(),
    }
}
