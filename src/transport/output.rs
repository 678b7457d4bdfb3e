//! Output helpers for commands streamed from many hosts at once (`k0sctl exec`): whole lines
//! prefixed with the host name, partial lines held back until their newline or [`finish`].
//!
//! [`finish`]: PrefixedLines::finish

use std::sync::{Arc, Mutex};

use super::{OutputCallback, StreamKind};

/// Receives complete, prefixed lines (without the trailing newline).
pub type LineSink = Arc<dyn Fn(StreamKind, &str) + Send + Sync>;

/// Splits a host's output stream into lines and hands them to a sink with a prefix.
#[derive(Clone)]
pub struct PrefixedLines {
    prefix: Arc<str>,
    sink: LineSink,
    partial: Arc<Mutex<(Vec<u8>, Vec<u8>)>>,
}

impl PrefixedLines {
    pub fn new(prefix: impl Into<String>, sink: LineSink) -> Self {
        PrefixedLines {
            prefix: Arc::from(prefix.into()),
            sink,
            partial: Arc::default(),
        }
    }

    fn emit(&self, kind: StreamKind, line: &[u8]) {
        let l = String::from_utf8_lossy(line);
        let l = l.strip_suffix('\r').unwrap_or(&l);
        (self.sink)(kind, &format!("{}{l}", self.prefix));
    }

    /// The callback to pass to [`crate::transport::Cmd::on_output`].
    pub fn callback(&self) -> OutputCallback {
        let me = self.clone();
        Arc::new(move |kind, data: &[u8]| {
            let mut lines = Vec::new();
            {
                let mut p = me.partial.lock().expect("lock");
                let buf = match kind {
                    StreamKind::Stdout => &mut p.0,
                    StreamKind::Stderr => &mut p.1,
                };
                buf.extend_from_slice(data);
                while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let rest = buf.split_off(i + 1);
                    let mut line = std::mem::replace(buf, rest);
                    line.pop();
                    lines.push(line);
                }
            }
            for l in lines {
                me.emit(kind, &l);
            }
        })
    }

    /// Emit what is left of unterminated last lines.
    pub fn finish(&self) {
        let (o, e) = {
            let mut p = self.partial.lock().expect("lock");
            (std::mem::take(&mut p.0), std::mem::take(&mut p.1))
        };
        if !o.is_empty() {
            self.emit(StreamKind::Stdout, &o);
        }
        if !e.is_empty() {
            self.emit(StreamKind::Stderr, &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_whole_lines() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let p = PrefixedLines::new(
            "[h1] ",
            Arc::new(move |k, l: &str| g.lock().unwrap().push((k, l.to_string()))),
        );
        let cb = p.callback();
        cb(StreamKind::Stdout, b"a\nb");
        cb(StreamKind::Stderr, b"e\n");
        cb(StreamKind::Stdout, b"c\nd");
        p.finish();
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (StreamKind::Stdout, "[h1] a".to_string()),
                (StreamKind::Stderr, "[h1] e".to_string()),
                (StreamKind::Stdout, "[h1] bc".to_string()),
                (StreamKind::Stdout, "[h1] d".to_string()),
            ]
        );
    }
}
