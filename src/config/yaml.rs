//! A YAML document tree that remembers where every node came from.
//!
//! k0sctl manifests are decoded in two steps: this module turns text into a tree of [`Node`]s
//! (scalars keep their source text and style, every node keeps its line and column), and
//! [`super::decode`] walks that tree into the typed model while collecting *every* problem
//! instead of stopping at the first one.
//!
//! Parsing is done by `granit-parser`, the YAML parser that `serde-saphyr` is built on. On top
//! of its events this module implements what k0sctl's YAML 1.1 parser (gopkg.in/yaml.v2)
//! accepts and serde-saphyr also accepts: anchors and aliases, `<<` merge keys, and duplicate
//! keys rejected. Scalar *resolution* (is `yes` a boolean, is `0755` octal?) is left to the
//! consumer, because it depends on the type the schema expects there.

use std::collections::{HashMap, HashSet};
use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle};

use super::envsubst::SourceMap;

/// A 1-based line and column in the original (pre-substitution) source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// How a scalar was written; quoted scalars are always strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its text after escape processing, and an explicit tag suffix if one was
    /// given (`!!str` gives `Some("str")`).
    Scalar {
        text: String,
        style: Style,
        tag: Option<String>,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Node,
    pub value: Node,
}

impl Entry {
    /// The key as text (mapping keys in manifests are scalars).
    pub fn key_str(&self) -> &str {
        self.key.scalar_text().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

impl Node {
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for an empty plain scalar, `~` or `null` (any case), or `!!null`.
    pub fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { text, style, tag } => {
                if tag.as_deref() == Some("null") {
                    return true;
                }
                *style == Style::Plain && tag.is_none() && is_null_text(text)
            }
            _ => false,
        }
    }

    /// Looks up a key in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|e| e.key_str() == key),
            _ => None,
        }
    }

    /// Describes the node's type for error messages ("a mapping", "a list", "the string \"x\"").
    pub fn describe(&self) -> String {
        match &self.kind {
            NodeKind::Map(_) => "a mapping".into(),
            NodeKind::Seq(_) => "a list".into(),
            NodeKind::Scalar { text, .. } if self.is_null() => {
                if text.is_empty() {
                    "nothing (null)".into()
                } else {
                    format!("null ({text})")
                }
            }
            NodeKind::Scalar { text, .. } => {
                let mut shown: String = text.chars().take(40).collect();
                if shown.len() < text.len() {
                    shown.push('…');
                }
                format!("{shown:?}")
            }
        }
    }
}

pub fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    pub root: Node,
    /// The document's text as it was parsed (after environment substitution), for manifests
    /// that are passed on verbatim.
    pub raw: String,
    /// Position of the document's first node.
    pub pos: Pos,
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// How many nodes alias expansion may create in one document (guards against "billion laughs").
const ALIAS_BUDGET: usize = 200_000;
/// How deep collections may nest.
const MAX_DEPTH: usize = 64;

/// Parses every document of `text`. Documents that fail to parse produce a [`SyntaxError`] and
/// parsing resumes at the next `---`, so one bad document does not hide problems in the next.
pub fn parse_documents(text: &str, map: &SourceMap) -> (Vec<Document>, Vec<SyntaxError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    // Comments are presentation, not data. Another crate in the build may enable
    // granit-parser's `comments` feature, so switch their events off explicitly.
    let mut options = granit_parser::Options::default();
    options.set_emit_comments(false);
    let mut parser = Parser::new_from_str_with_options(text, options);
    loop {
        let mut b = Builder {
            parser: &mut parser,
            map,
            text,
            anchors: HashMap::new(),
            alias_nodes: 0,
        };
        match b.next_document() {
            Ok(Some(doc)) => {
                if let Some(doc) = doc {
                    docs.push(doc);
                }
            }
            Ok(None) => break,
            Err(e) => {
                errors.push(e);
                match parser.proceed_next_document() {
                    Ok(true) => continue,
                    _ => break,
                }
            }
        }
    }
    (docs, errors)
}

fn char_to_byte(text: &str, char_index: usize) -> usize {
    text.char_indices()
        .nth(char_index)
        .map(|(b, _)| b)
        .unwrap_or(text.len())
}

struct Builder<'p, 'i> {
    parser: &'p mut Parser<'i, granit_parser::StrInput<'i>>,
    map: &'p SourceMap,
    text: &'i str,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
}

type Ev<'i> = (Event<'i>, granit_parser::Span);

impl<'i> Builder<'_, 'i> {
    fn next_event(&mut self) -> Result<Option<Ev<'i>>, SyntaxError> {
        match self.parser.next_event() {
            None => Ok(None),
            Some(Ok(ev)) => Ok(Some(ev)),
            Some(Err(e)) => Err(SyntaxError {
                pos: self.pos_of(e.marker()),
                message: syntax_message(&e.info()),
            }),
        }
    }

    fn pos_of(&self, m: &granit_parser::Marker) -> Pos {
        let byte = m
            .byte_offset()
            .unwrap_or_else(|| char_to_byte(self.text, m.index()));
        // Position in the substituted text, then mapped back to the original.
        self.map.original_pos(byte)
    }

    fn byte_of(&self, m: &granit_parser::Marker) -> usize {
        m.byte_offset()
            .unwrap_or_else(|| char_to_byte(self.text, m.index()))
    }

    /// Returns Ok(None) at end of stream, Ok(Some(None)) for an empty document.
    fn next_document(&mut self) -> Result<Option<Option<Document>>, SyntaxError> {
        loop {
            let Some((ev, span)) = self.next_event()? else {
                return Ok(None);
            };
            match ev {
                Event::StreamStart => continue,
                Event::StreamEnd => return Ok(None),
                Event::DocumentStart(..) => {
                    let start_byte = self.byte_of(&span.start);
                    let Some((ev, span)) = self.next_event()? else {
                        return Ok(None);
                    };
                    if matches!(ev, Event::DocumentEnd) {
                        return Ok(Some(None));
                    }
                    let root = self.node(ev, span, 0)?;
                    // Consume DocumentEnd.
                    let end_byte = match self.next_event()? {
                        Some((Event::DocumentEnd, span)) => self.byte_of(&span.end),
                        _ => self.text.len(),
                    };
                    if root.is_null() {
                        return Ok(Some(None));
                    }
                    let raw = self
                        .text
                        .get(start_byte.min(end_byte)..end_byte)
                        .unwrap_or("")
                        .to_string();
                    let pos = root.pos;
                    return Ok(Some(Some(Document { root, raw, pos })));
                }
                _ => continue,
            }
        }
    }

    fn node(
        &mut self,
        ev: Event<'i>,
        span: granit_parser::Span,
        depth: usize,
    ) -> Result<Node, SyntaxError> {
        let pos = self.pos_of(&span.start);
        if depth > MAX_DEPTH {
            return Err(SyntaxError {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let tag = tag.map(|t| t.suffix().to_string());
                (
                    Node {
                        kind: NodeKind::Scalar {
                            text: text.into_owned(),
                            style,
                            tag,
                        },
                        pos,
                    },
                    anchor,
                )
            }
            Event::SequenceStart(_style, anchor, _tag) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.expect_event(pos)?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (
                    Node {
                        kind: NodeKind::Seq(items),
                        pos,
                    },
                    anchor,
                )
            }
            Event::MappingStart(_style, anchor, _tag) => {
                let mut entries: Vec<Entry> = Vec::new();
                let mut merges: Vec<(usize, Node)> = Vec::new();
                // Key text → index into `entries`, so duplicate detection stays linear in the
                // size of the mapping (a scan per key made 100,000 keys take minutes).
                let mut seen: HashMap<String, usize> = HashMap::new();
                loop {
                    let (ev, span) = self.expect_event(pos)?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(ev, span, depth + 1)?;
                    let (ev, span) = self.expect_event(pos)?;
                    let value = self.node(ev, span, depth + 1)?;
                    match &key.kind {
                        NodeKind::Scalar { text, style, .. }
                            if text == "<<" && *style == Style::Plain =>
                        {
                            merges.push((entries.len(), value));
                            continue;
                        }
                        NodeKind::Scalar { .. } => {}
                        _ => {
                            return Err(SyntaxError {
                                pos: key.pos,
                                message: "mapping keys must be plain values, not lists or mappings"
                                    .into(),
                            });
                        }
                    }
                    if let Some(&prev) = seen.get(key_text(&key)) {
                        return Err(SyntaxError {
                            pos: key.pos,
                            message: format!(
                                "duplicate key {:?} (first defined at line {})",
                                key_text(&key),
                                entries[prev].key.pos.line
                            ),
                        });
                    }
                    seen.insert(key_text(&key).to_string(), entries.len());
                    entries.push(Entry { key, value });
                }
                let entries = apply_merges(entries, merges)?;
                (
                    Node {
                        kind: NodeKind::Map(entries),
                        pos,
                    },
                    anchor,
                )
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(SyntaxError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                let count = count_nodes(target);
                self.alias_nodes += count;
                if self.alias_nodes > ALIAS_BUDGET {
                    return Err(SyntaxError {
                        pos,
                        message: format!(
                            "aliases expand to more than {ALIAS_BUDGET} nodes; refusing to expand further"
                        ),
                    });
                }
                let mut n = target.clone();
                n.pos = pos;
                (n, 0)
            }
            other => {
                return Err(SyntaxError {
                    pos,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn expect_event(&mut self, pos: Pos) -> Result<Ev<'i>, SyntaxError> {
        self.next_event()?.ok_or(SyntaxError {
            pos,
            message: "unexpected end of input".into(),
        })
    }
}

fn key_text(n: &Node) -> &str {
    n.scalar_text().unwrap_or("")
}

fn count_nodes(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| count_nodes(&e.key) + count_nodes(&e.value))
                .sum::<usize>()
        }
    }
}

/// Applies `<<` merge keys: keys written in the mapping itself win over merged ones, and an
/// earlier merge source wins over a later one (YAML merge-key semantics, as in yaml.v2).
fn apply_merges(
    mut entries: Vec<Entry>,
    merges: Vec<(usize, Node)>,
) -> Result<Vec<Entry>, SyntaxError> {
    if merges.is_empty() {
        return Ok(entries);
    }
    // Insert merged entries at the position of their `<<` key, back to front so indexes hold.
    let mut inserts: Vec<(usize, Vec<Entry>)> = Vec::new();
    let mut taken: HashSet<String> = entries.iter().map(|e| e.key_str().to_string()).collect();
    for (at, value) in merges {
        let sources: Vec<Node> = match value.kind {
            NodeKind::Map(_) => vec![value],
            NodeKind::Seq(items) => items,
            _ => {
                return Err(SyntaxError {
                    pos: value.pos,
                    message: "a merge key (<<) needs a mapping or a list of mappings".into(),
                });
            }
        };
        let mut add = Vec::new();
        for src in sources {
            let NodeKind::Map(src_entries) = src.kind else {
                return Err(SyntaxError {
                    pos: src.pos,
                    message: "a merge key (<<) needs a mapping or a list of mappings".into(),
                });
            };
            for e in src_entries {
                if taken.insert(e.key_str().to_string()) {
                    add.push(e);
                }
            }
        }
        inserts.push((at, add));
    }
    for (at, add) in inserts.into_iter().rev() {
        let at = at.min(entries.len());
        entries.splice(at..at, add);
    }
    Ok(entries)
}

fn syntax_message(info: &str) -> String {
    let mut s = info.trim().to_string();
    if s.is_empty() {
        s = "invalid YAML".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Document>, Vec<SyntaxError>) {
        parse_documents(text, &SourceMap::identity(text))
    }

    #[test]
    fn positions_are_one_based() {
        let (docs, errs) = parse("a:\n  b: 1\n  c: [x, y]\n");
        assert!(errs.is_empty());
        let root = &docs[0].root;
        let a = root.get("a").unwrap();
        assert_eq!(a.key.pos, Pos { line: 1, col: 1 });
        let c = a.value.get("c").unwrap();
        assert_eq!(c.key.pos, Pos { line: 3, col: 3 });
        assert_eq!(c.value.pos, Pos { line: 3, col: 6 });
    }

    #[test]
    fn merge_keys_and_anchors() {
        let (docs, errs) =
            parse("base: &b {user: root, port: 22}\nhost:\n  <<: *b\n  port: 2222\n");
        assert!(errs.is_empty(), "{errs:?}");
        let host = &docs[0].root.get("host").unwrap().value;
        assert_eq!(host.get("user").unwrap().value.scalar_text(), Some("root"));
        assert_eq!(host.get("port").unwrap().value.scalar_text(), Some("2222"));
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second_key() {
        let (_, errs) = parse("a: 1\nb: 2\na: 3\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].pos, Pos { line: 3, col: 1 });
        assert!(errs[0].message.contains("duplicate key \"a\""));
    }

    #[test]
    fn multiple_documents_and_resume_after_error() {
        let (docs, errs) = parse("a: 1\n---\nb: [1\n---\nc: 3\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(docs.len(), 2);
        assert!(docs[1].root.get("c").is_some());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, errs) = parse(&text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("aliases expand"));
    }
}
