//! `/etc/os-release` parsing (with `/usr/lib/os-release` as the fallback source, read by the
//! facts script). Values may be bare, "double-quoted" (with `\` escapes) or 'single-quoted'.

/// The os-release fields the host layer uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, lowercased (e.g. `ubuntu`).
    pub id: String,
    /// `ID_LIKE`, space separated, lowercased (e.g. `["rhel", "centos", "fedora"]`).
    pub id_like: Vec<String>,
    pub name: String,
    pub version_id: String,
    pub pretty_name: String,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::new();
        let mut esc = false;
        for c in inner.chars() {
            if esc {
                out.push(c);
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else {
                out.push(c);
            }
        }
        out
    } else if let Some(inner) = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        inner.to_string()
    } else {
        v.to_string()
    }
}

impl OsRelease {
    /// Parse os-release text; unknown keys and comments are ignored.
    pub fn parse(text: &str) -> Self {
        let mut o = OsRelease::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = unquote(v);
            match k.trim() {
                "ID" => o.id = v.to_lowercase(),
                "ID_LIKE" => o.id_like = v.split_whitespace().map(str::to_lowercase).collect(),
                "NAME" => o.name = v,
                "VERSION_ID" => o.version_id = v,
                "PRETTY_NAME" => o.pretty_name = v,
                _ => {}
            }
        }
        o
    }

    /// A synthetic os-release for the `os:` override (only `ID` is set, as in k0sctl).
    pub fn overridden(id: &str) -> Self {
        OsRelease {
            id: id.to_lowercase(),
            name: id.to_string(),
            ..Default::default()
        }
    }

    /// `PRETTY_NAME`, else `NAME VERSION_ID`, else `ID`.
    pub fn display(&self) -> String {
        if !self.pretty_name.is_empty() {
            self.pretty_name.clone()
        } else if !self.name.is_empty() {
            format!("{} {}", self.name, self.version_id)
                .trim()
                .to_string()
        } else {
            self.id.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_and_id_like() {
        let o = OsRelease::parse(
            "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID='9.3'\n# c\nPRETTY_NAME=\"Rocky \\\"Blue\\\" Onyx\"\n",
        );
        assert_eq!(o.id, "rocky");
        assert_eq!(o.id_like, vec!["rhel", "centos", "fedora"]);
        assert_eq!(o.version_id, "9.3");
        assert_eq!(o.pretty_name, "Rocky \"Blue\" Onyx");
        let d = OsRelease::parse("ID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!((d.id.as_str(), d.version_id.as_str()), ("debian", "12"));
    }
}
