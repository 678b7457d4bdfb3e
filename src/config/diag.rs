//! Configuration diagnostics: what is wrong, where (file:line:column and key path), and what to do.
//!
//! Every problem found while loading a configuration becomes a [`Diagnostic`]; the loader
//! collects all of them so a user fixes a file in one pass instead of one error per run.

use std::fmt;
use std::path::PathBuf;

use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file as the user named it (`-` shows as `<stdin>`); None for problems that belong
    /// to no single file (e.g. "no Cluster document found").
    pub file: Option<PathBuf>,
    pub pos: Option<Pos>,
    /// The key path, such as `spec.hosts[1].ssh.address`; empty when it makes no sense.
    pub path: String,
    pub message: String,
    /// A suggestion, such as `did you mean "address"?`.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: None,
            pos: None,
            path: path.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(path, message)
        }
    }

    pub fn at(mut self, pos: Pos) -> Self {
        self.pos = Some(pos);
        self
    }

    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets (or clears) the hint of a diagnostic already pushed to a list.
    pub fn with_hint(&mut self, hint: Option<String>) {
        self.hint = hint;
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `k0sctl.yaml:14:7: spec.hosts[1].ssh.adress: unknown field (did you mean "address"?)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(pos) = self.pos {
                write!(f, "{}:{}:", pos.line, pos.col)?;
            }
            f.write_str(" ")?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// Finds the closest of `candidates` to `word`, for "did you mean" hints.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c.eq_ignore_ascii_case(word) {
            return Some(c);
        }
        let score = strsim::jaro_winkler(&lower, &c.to_ascii_lowercase());
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Formats a `did you mean` hint when there is a close candidate.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    suggest(word, candidates).map(|c| format!("did you mean {c:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_format() {
        let d = Diagnostic::error("spec.hosts[1].ssh.adress", "unknown field")
            .at(Pos { line: 14, col: 7 })
            .in_file("k0sctl.yaml")
            .hint("did you mean \"address\"?");
        assert_eq!(
            d.to_string(),
            "k0sctl.yaml:14:7: spec.hosts[1].ssh.adress: unknown field (did you mean \"address\"?)"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("adress", ["address", "user", "port", "keyPath"]),
            Some("address")
        );
        assert_eq!(suggest("keypath", ["address", "keyPath"]), Some("keyPath"));
        assert_eq!(suggest("zzz", ["address", "user"]), None);
    }
}
