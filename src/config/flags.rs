//! `installFlags`: the list of extra `k0s install` flags, with k0sctl's matching rules.
//!
//! A flag is matched by its name: `--data-dir=/x`, `--data-dir /x` and `--data-dir` all match
//! `--data-dir`. Values may be shell-quoted (`--labels="a=b"`); quoting is removed on the way in
//! and re-applied with POSIX rules when the flags are joined into a command line.

use serde::{Deserialize, Serialize};

/// Extra flags for `k0s install`, as written in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flags(pub Vec<String>);

/// Removes one level of surrounding shell quotes if the whole string is quoted.
pub fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        match shlex::split(s) {
            Some(parts) if parts.len() == 1 => parts.into_iter().next().unwrap_or_default(),
            _ => s.to_string(),
        }
    } else {
        s.to_string()
    }
}

/// True when every quote in the flag is closed (k0sctl rejects unbalanced quotes).
pub fn balanced_quotes(s: &str) -> bool {
    let mut in_single = false;
    let mut in_double = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if !in_single => escaped = true,
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            _ => {}
        }
    }
    !in_single && !in_double
}

fn name_of(s: &str) -> &str {
    match s.find(['=', ' ']) {
        Some(i) => &s[..i],
        None => s,
    }
}

impl Flags {
    fn index(&self, flag: &str) -> Option<usize> {
        let flag = unquote(flag);
        let name = name_of(&flag);
        // k0sctl misses a bare `--debug` when asked for `--debug=false`; matching by name
        // avoids adding the same flag twice.
        self.0.iter().position(|v| *v == flag || name_of(v) == name)
    }

    pub fn include(&self, flag: &str) -> bool {
        self.index(flag).is_some()
    }

    /// The whole flag (`--san=10.0.0.1`), if present.
    pub fn get(&self, flag: &str) -> Option<&str> {
        self.index(flag).map(|i| self.0[i].as_str())
    }

    /// The value part of a flag (`10.0.0.1` for `--san=10.0.0.1`), unquoted; `None` when the
    /// flag is absent, `Some("")` when it has no value.
    pub fn value(&self, flag: &str) -> Option<String> {
        let f = unquote(self.get(flag)?);
        Some(match f.find(['=', ' ']) {
            Some(i) => unquote(&f[i + 1..]),
            None => String::new(),
        })
    }

    /// Boolean flags: absent → false, present without value → true, else the value.
    pub fn boolean(&self, flag: &str) -> Result<bool, String> {
        match self.value(flag) {
            None => Ok(false),
            Some(v) if v.is_empty() => Ok(true),
            Some(v) => parse_go_bool(&v)
                .ok_or_else(|| format!("{flag} has an invalid boolean value {v:?}")),
        }
    }

    /// True when the flag is present and not explicitly `false`.
    pub fn enabled(&self, flag: &str) -> bool {
        self.get(flag).is_some() && self.value(flag).as_deref() != Some("false")
    }

    pub fn add(&mut self, flag: &str) {
        self.0.push(unquote(flag));
    }

    pub fn add_unless_exist(&mut self, flag: &str) {
        if !self.include(flag) {
            self.add(flag);
        }
    }

    pub fn add_or_replace(&mut self, flag: &str) {
        let f = unquote(flag);
        match self.index(&f) {
            Some(i) => self.0[i] = f,
            None => self.0.push(f),
        }
    }

    pub fn delete(&mut self, flag: &str) {
        if let Some(i) = self.index(flag) {
            self.0.remove(i);
        }
    }

    /// (name, value) pairs, values unquoted.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| match f.find(['=', ' ']) {
                Some(i) => (f[..i].to_string(), unquote(&f[i + 1..])),
                None => (f.clone(), String::new()),
            })
            .collect()
    }

    /// Joins into a command-line fragment with POSIX quoting: `--a=b --c='d e'`.
    pub fn join(&self) -> String {
        self.pairs()
            .into_iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    quote(&k)
                } else {
                    format!("{k}={}", quote(&v))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// POSIX shell quoting that leaves safe strings alone (like Go's shellescape.Quote).
pub fn quote(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

/// Go's strconv.ParseBool.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[&str]) -> Flags {
        Flags(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn matching_and_values() {
        let fl = f(&[
            "--data-dir=/x",
            "--debug",
            "--labels \"a=b\"",
            "--single=false",
        ]);
        assert_eq!(fl.value("--data-dir").as_deref(), Some("/x"));
        assert_eq!(fl.value("--debug").as_deref(), Some(""));
        assert_eq!(fl.value("--labels").as_deref(), Some("a=b"));
        assert_eq!(fl.value("--nope"), None);
        assert!(fl.enabled("--debug"));
        assert!(!fl.enabled("--single"));
        assert_eq!(fl.boolean("--debug"), Ok(true));
        assert_eq!(fl.boolean("--single"), Ok(false));
        assert!(!fl.include("--data"));
    }

    #[test]
    fn add_replace_delete_join() {
        let mut fl = f(&["--kubelet-extra-args=\"--foo bar\""]);
        fl.add_or_replace("--data-dir=/tmp/k0s");
        fl.add_or_replace("--data-dir=/var/lib/k0s");
        fl.add_unless_exist("--debug");
        fl.add_unless_exist("--debug=false");
        assert_eq!(
            fl.join(),
            "--kubelet-extra-args='--foo bar' --data-dir=/var/lib/k0s --debug"
        );
        fl.delete("--data-dir");
        assert_eq!(fl.0.len(), 2);
    }

    #[test]
    fn quotes() {
        assert!(balanced_quotes("--labels=\"a=b\""));
        assert!(balanced_quotes("--x='it\"s'"));
        assert!(!balanced_quotes("--labels=\"a=b"));
        assert!(!balanced_quotes("--x='a"));
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\"'\"'s'");
    }
}
