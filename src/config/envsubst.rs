//! Environment-variable substitution in configuration files, as k0sctl does it.
//!
//! k0sctl runs every config file through `a8m/envsubst` before parsing the YAML. The syntax is
//! the shell's: `$VAR`, `${VAR}`, `${VAR-default}`, `${VAR:-default}`, `${VAR=default}`,
//! `${VAR:=default}`, `${VAR+alt}`, `${VAR:+alt}` (defaults and alternatives may themselves
//! contain expressions), and `$$` for a literal `$`. An unset variable becomes the empty string.
//!
//! It is written here rather than taken from a crate because positions matter: the output comes
//! with a [`SourceMap`], so a YAML error in substituted text is still reported at the line and
//! column of the original file. Unset variables without a default are returned so the loader can
//! warn about them (k0sctl substitutes them silently).

use super::yaml::Pos;

/// Maps byte offsets of substituted text back to line/column of the original text.
#[derive(Debug, Clone)]
pub struct SourceMap {
    /// Sorted by `out`: each segment starts at output byte `out` and corresponds to input byte
    /// `input`; `literal` segments map byte for byte, substituted ones all map to their `$`.
    segments: Vec<Segment>,
    line_starts: Vec<usize>,
    /// Offsets of UTF-8 continuation bytes of the original, so a column (in characters) is
    /// found with two binary searches instead of counting the line's characters each time
    /// (which made a long single-line flow mapping quadratic to load).
    continuation: Vec<usize>,
    original: String,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    out: usize,
    input: usize,
    literal: bool,
}

impl SourceMap {
    /// A map for text that was not substituted.
    pub fn identity(text: &str) -> Self {
        Self::new(
            text,
            vec![Segment {
                out: 0,
                input: 0,
                literal: true,
            }],
        )
    }

    fn new(original: &str, segments: Vec<Segment>) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(original.match_indices('\n').map(|(i, _)| i + 1));
        let continuation = original
            .bytes()
            .enumerate()
            .filter(|(_, b)| b & 0xC0 == 0x80)
            .map(|(i, _)| i)
            .collect();
        Self {
            segments,
            line_starts,
            continuation,
            original: original.to_string(),
        }
    }

    /// Line/column (1-based, columns in characters) in the original text of output byte `out`.
    pub fn original_pos(&self, out: usize) -> Pos {
        let idx = self
            .segments
            .partition_point(|s| s.out <= out)
            .saturating_sub(1);
        let input = match self.segments.get(idx) {
            Some(s) if s.literal => s.input + (out - s.out),
            Some(s) => s.input,
            None => out,
        };
        self.input_pos(input.min(self.original.len()))
    }

    /// Line/column of a byte offset of the original text.
    pub fn input_pos(&self, input: usize) -> Pos {
        let line_idx = self
            .line_starts
            .partition_point(|&s| s <= input)
            .saturating_sub(1);
        let start = self.line_starts[line_idx];
        let cont = self.continuation.partition_point(|&c| c < input)
            - self.continuation.partition_point(|&c| c < start);
        let col = input - start - cont;
        Pos {
            line: line_idx + 1,
            col: col + 1,
        }
    }
}

/// The result of substitution.
#[derive(Debug)]
pub struct Substituted {
    pub text: String,
    pub map: SourceMap,
    /// Variables that were referenced without a default while unset: (name, position).
    pub unset: Vec<(String, Pos)>,
}

/// A substitution syntax error, such as `${` without its `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubstError {
    pub pos: Pos,
    pub message: String,
}

/// Substitutes environment variables in `input`, looking them up with `lookup`.
pub fn substitute(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstError> {
    let mut out = String::with_capacity(input.len());
    let mut segments = Vec::new();
    let mut unset = Vec::new();
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut literal_start = 0;
    let identity = SourceMap::identity(input);
    let push_literal = |segments: &mut Vec<Segment>, out_len: usize, at: usize| {
        segments.push(Segment {
            out: out_len,
            input: at,
            literal: true,
        });
    };
    push_literal(&mut segments, 0, 0);
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        // Flush the literal run before the `$`.
        out.push_str(&input[literal_start..i]);
        let dollar = i;
        match bytes.get(i + 1) {
            Some(b'$') => {
                // `$$` is a literal `$`.
                segments.push(Segment {
                    out: out.len(),
                    input: dollar,
                    literal: false,
                });
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let close = find_close(input, i + 2).ok_or_else(|| SubstError {
                    pos: identity.input_pos(dollar),
                    message: "unterminated \"${\": add the closing \"}\" (write \"$$\" for a literal \"$\")".into(),
                })?;
                let expr = &input[i + 2..close];
                let value = eval_braced(expr, lookup, &mut unset, identity.input_pos(dollar))
                    .map_err(|message| SubstError {
                        pos: identity.input_pos(dollar),
                        message,
                    })?;
                segments.push(Segment {
                    out: out.len(),
                    input: dollar,
                    literal: false,
                });
                out.push_str(&value);
                i = close + 1;
            }
            // A lone `$_` is text to a8m/envsubst, not a variable.
            Some(c) if is_name_start(*c) && &input[i + 1..name_end(bytes, i + 1)] != "_" => {
                let j = name_end(bytes, i + 1);
                let name = &input[i + 1..j];
                let value = match lookup(name) {
                    Some(v) => v,
                    None => {
                        unset.push((name.to_string(), identity.input_pos(dollar)));
                        String::new()
                    }
                };
                segments.push(Segment {
                    out: out.len(),
                    input: dollar,
                    literal: false,
                });
                out.push_str(&value);
                i = j;
            }
            _ => {
                // A `$` not followed by a name is kept as it is.
                i += 1;
                literal_start = dollar;
                continue;
            }
        }
        literal_start = i;
        push_literal(&mut segments, out.len(), i);
    }
    out.push_str(&input[literal_start..]);
    Ok(Substituted {
        text: out,
        map: SourceMap::new(input, segments),
        unset,
    })
}

/// a8m/envsubst starts a name with any letter, digit or `_`, so positional forms (`$1`,
/// `${1}`) are names too: never set in the environment, they become the empty string.
fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The end of the name starting at `from`.
fn name_end(bytes: &[u8], from: usize) -> usize {
    let mut j = from;
    while j < bytes.len() && is_name_char(bytes[j]) {
        j += 1;
    }
    j
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Finds the `}` closing a `${` whose content starts at `from`, allowing nested `${…}`.
fn find_close(input: &str, from: usize) -> Option<usize> {
    let bytes = input.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' if depth == 0 => return None,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn eval_braced(
    expr: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<(String, Pos)>,
    pos: Pos,
) -> Result<String, String> {
    let name_len = expr.bytes().take_while(|c| is_name_char(*c)).count();
    let name = &expr[..name_len];
    if name.is_empty() || !is_name_start(name.as_bytes()[0]) {
        return Err(format!(
            "bad substitution \"${{{expr}}}\": expected a variable name such as ${{HOME}}"
        ));
    }
    let rest = &expr[name_len..];
    let value = lookup(name);
    let sub = |word: &str, unset: &mut Vec<(String, Pos)>| -> Result<String, String> {
        // Defaults may contain expressions of their own.
        let s = substitute(word, lookup).map_err(|e| e.message)?;
        unset.extend(s.unset.into_iter().map(|(n, _)| (n, pos)));
        Ok(s.text)
    };
    let (op, word) = if let Some(w) = rest.strip_prefix(":-") {
        (":-", w)
    } else if let Some(w) = rest.strip_prefix(":=") {
        (":=", w)
    } else if let Some(w) = rest.strip_prefix(":+") {
        (":+", w)
    } else if let Some(w) = rest.strip_prefix('-') {
        ("-", w)
    } else if let Some(w) = rest.strip_prefix('=') {
        ("=", w)
    } else if let Some(w) = rest.strip_prefix('+') {
        ("+", w)
    } else if rest.is_empty() {
        ("", "")
    } else {
        return Err(format!(
            "bad substitution \"${{{expr}}}\": supported forms are ${{VAR}}, ${{VAR:-default}}, ${{VAR-default}}, ${{VAR:=default}}, ${{VAR=default}}, ${{VAR:+alt}} and ${{VAR+alt}}"
        ));
    };
    Ok(match op {
        "" => match value {
            Some(v) => v,
            None => {
                unset.push((name.to_string(), pos));
                String::new()
            }
        },
        ":-" | ":=" => match value {
            Some(v) if !v.is_empty() => v,
            _ => sub(word, unset)?,
        },
        "-" | "=" => match value {
            Some(v) => v,
            None => sub(word, unset)?,
        },
        ":+" => match value {
            Some(v) if !v.is_empty() => sub(word, unset)?,
            _ => String::new(),
        },
        "+" => match value {
            Some(_) => sub(word, unset)?,
            None => String::new(),
        },
        _ => unreachable!(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            "USER_NAME" => Some("admin".into()),
            _ => None,
        }
    }

    fn s(input: &str) -> String {
        substitute(input, &env).unwrap().text
    }

    #[test]
    fn forms() {
        assert_eq!(s("a: $HOST"), "a: 10.0.0.1");
        assert_eq!(s("a: ${HOST}:22"), "a: 10.0.0.1:22");
        assert_eq!(s("${MISSING:-def}"), "def");
        assert_eq!(s("${EMPTY:-def}"), "def");
        assert_eq!(s("${EMPTY-def}"), "");
        assert_eq!(s("${MISSING-def}"), "def");
        assert_eq!(s("${MISSING:=def}"), "def");
        assert_eq!(s("${MISSING=def}"), "def");
        assert_eq!(s("${HOST:+alt}"), "alt");
        assert_eq!(s("${EMPTY:+alt}"), "");
        assert_eq!(s("${EMPTY+alt}"), "alt");
        assert_eq!(s("${MISSING+alt}"), "");
        assert_eq!(s("${MISSING:-${USER_NAME}}"), "admin");
        assert_eq!(s("cost $$5 and $$HOST"), "cost $5 and $HOST");
        assert_eq!(s("a $ b $ c $_ $_x"), "a $ b $ c $_ ");
        assert_eq!(s("echo $1 ${1} ${2:-two} $12x."), "echo   two .");
        assert_eq!(s("$MISSING."), ".");
    }

    #[test]
    fn unset_variables_are_reported() {
        let r = substitute("a: $NOPE\nb: ${ALSO_NOPE}\nc: ${X:-ok}\n", &env).unwrap();
        let names: Vec<_> = r
            .unset
            .iter()
            .map(|(n, p)| (n.as_str(), p.line, p.col))
            .collect();
        assert_eq!(names, vec![("NOPE", 1, 4), ("ALSO_NOPE", 2, 4)]);
        let r = substitute("run: echo $1 ${1}\n", &env).unwrap();
        let names: Vec<_> = r.unset.iter().map(|(n, p)| (n.as_str(), p.col)).collect();
        assert_eq!(names, vec![("1", 11), ("1", 14)]);
    }

    #[test]
    fn unterminated_brace_is_an_error_with_position() {
        let e = substitute("a: 1\nb: ${HOST\n", &env).unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (2, 4));
        assert!(e.message.contains("unterminated"));
    }

    #[test]
    fn positions_map_back_to_the_original() {
        let r = substitute("x: ${HOST}, y: z\n", &env).unwrap();
        // "y" is at byte 14 of the output ("x: 10.0.0.1, y") and at column 13 of the input.
        let out_y = r.text.find("y:").unwrap();
        assert_eq!(r.map.original_pos(out_y), Pos { line: 1, col: 13 });
        // Anything inside the substituted value maps to the `$`.
        let out_val = r.text.find("10.0").unwrap() + 2;
        assert_eq!(r.map.original_pos(out_val), Pos { line: 1, col: 4 });
    }
}
