//! Binary server: a small HTTP/1.1 file server on the environment's bridge address that serves
//! stamped k0s stand-in binaries at k0s's GitHub release URL layout, for host-side download tests:
//!
//! * `GET /k0sproject/k0s/releases/download/<version>/k0s-<version>-amd64` (the `+` may be `%2B`)
//! * `GET /k0sproject/k0s/releases/download/<version>/sha256sums.txt`
//! * `GET /stable.txt`, `GET /latest.txt` (newest version offered)
//!
//! Files live under `<root>/k0sproject/k0s/releases/download/...`. HEAD is supported.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Populate `<root>` with stamped copies of `k0s_bin` for every version, plus sha256sums.txt,
/// stable.txt and latest.txt. Returns the release directory of each version.
pub fn populate(root: &Path, k0s_bin: &Path, versions: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for v in versions {
        let dir = root.join("k0sproject/k0s/releases/download").join(v);
        std::fs::create_dir_all(&dir)?;
        let name = format!("k0s-{v}-amd64");
        let dst = dir.join(&name);
        crate::stamp::stamp_copy(k0s_bin, &dst, v)?;
        let sum = crate::stamp::sha256_file(&dst)?;
        std::fs::write(dir.join("sha256sums.txt"), format!("{sum}  {name}\n"))?;
        out.push(dir);
    }
    if let Some(last) = versions.last() {
        std::fs::write(root.join("stable.txt"), format!("{last}\n"))?;
        std::fs::write(root.join("latest.txt"), format!("{last}\n"))?;
    }
    Ok(out)
}

/// A running binary server (thread-based). Stops when dropped.
pub struct BinServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BinServer {
    /// Serve `root` on `bind` (port 0 = any free port).
    pub fn start(root: PathBuf, bind: SocketAddr) -> Result<BinServer> {
        let l = TcpListener::bind(bind).with_context(|| format!("binary server: bind {bind}"))?;
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let root = root.clone();
                        std::thread::spawn(move || {
                            let _ = handle(s, &root);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
        });
        Ok(BinServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Serve forever on the current thread (used by `testenv binserver`).
    pub fn serve_forever(root: PathBuf, bind: SocketAddr) -> Result<()> {
        let l = TcpListener::bind(bind).with_context(|| format!("binary server: bind {bind}"))?;
        for s in l.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = handle(s, &root);
            });
        }
        Ok(())
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut s: TcpStream, root: &Path) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut r = BufReader::new(s.try_clone()?);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut keep_alive = line.contains("HTTP/1.1");
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            let hl = h.to_ascii_lowercase();
            if hl.starts_with("connection:") && hl.contains("close") {
                keep_alive = false;
            }
        }
        let path = crate::k0s::util::percent_decode(target.split('?').next().unwrap_or("/"));
        let rel: PathBuf = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect();
        let file = root.join(rel);
        let conn = if keep_alive { "keep-alive" } else { "close" };
        // Stream files (50 hosts downloading a 14 MB binary at once must not need 700 MB).
        match std::fs::File::open(&file).ok().filter(|_| file.is_file()) {
            Some(mut f) if method == "GET" || method == "HEAD" => {
                let len = f.metadata()?.len();
                let ctype = if path.ends_with(".txt") {
                    "text/plain; charset=utf-8"
                } else {
                    "application/octet-stream"
                };
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: {conn}\r\n\r\n"
                )?;
                if method == "GET" {
                    std::io::copy(&mut f, &mut s)?;
                }
            }
            _ => {
                let body = b"Not Found\n";
                write!(
                    s,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
                    body.len()
                )?;
                if method != "HEAD" {
                    s.write_all(body)?;
                }
            }
        }
        s.flush()?;
        if !keep_alive {
            return Ok(());
        }
    }
}
