//! Strict, error-collecting decoding of a [`Node`] tree into serde types.
//!
//! serde's derived code stops at the first error; users want every problem of a file at once.
//! This deserializer therefore never fails on bad input: it records an [`Issue`] (position,
//! key path, message, hint) and hands the visitor a neutral value (empty string, zero, empty
//! mapping) so decoding continues. Unknown keys are detected from the field list serde passes
//! to `deserialize_struct`, which also yields "did you mean" suggestions.
//!
//! Rules for model types decoded with it:
//! * every struct has `#[serde(default)]` (a missing key is never a serde error; required keys
//!   are checked by validation, which can point at the right place);
//! * no `flatten`, no aliases, no serde enums for user-facing strings (validate them instead);
//! * custom `Deserialize` impls report bad values with [`invalid`] instead of returning `Err`.
//!
//! Scalars are resolved the way k0sctl's YAML 1.1 parser resolves them: `yes`/`no`/`on`/`off`
//! are booleans, `0755` is octal, `0x1F` hex, and any scalar can fill a string field.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::diag::did_you_mean;
use super::yaml::{Entry, Node, NodeKind, Pos, Style};

/// A problem found while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub pos: Pos,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Decodes `node` into `T`, returning the value and every issue found.
pub fn decode<T: de::DeserializeOwned + Default>(node: &Node, base_path: &str) -> (T, Vec<Issue>) {
    let ctx = Ctx::default();
    let result = {
        let _guard = ActiveGuard::enter();
        T::deserialize(NodeDe {
            node,
            path: base_path.to_string(),
            ctx: &ctx,
        })
    };
    let mut issues = ctx.issues.into_inner();
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            issues.push(Issue {
                pos: node.pos,
                path: base_path.to_string(),
                message: e.0,
                hint: None,
            });
            T::default()
        }
    };
    (value, issues)
}

#[derive(Default)]
struct Ctx {
    issues: RefCell<Vec<Issue>>,
}

impl Ctx {
    fn report(&self, pos: Pos, path: &str, message: impl Into<String>, hint: Option<String>) {
        self.issues.borrow_mut().push(Issue {
            pos,
            path: path.to_string(),
            message: message.into(),
            hint,
        });
    }
}

// The node being decoded, so custom `Deserialize` impls can report through [`invalid`], and
// the last mapping key handed out, for [`unknown_key`].
thread_local! {
    static LAST_KEY: RefCell<Option<(Pos, String)>> = const { RefCell::new(None) };
    static ACTIVE: RefCell<Vec<(Pos, String, Vec<Issue>)>> = const { RefCell::new(Vec::new()) };
    static DEPTH: RefCell<usize> = const { RefCell::new(0) };
}

struct ActiveGuard;

impl ActiveGuard {
    fn enter() -> Self {
        DEPTH.with(|d| *d.borrow_mut() += 1);
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| *d.borrow_mut() -= 1);
    }
}

fn collecting() -> bool {
    DEPTH.with(|d| *d.borrow() > 0)
}

/// For custom `Deserialize` impls: report that the value is invalid. Under this module's
/// decoder the problem is recorded at the current node and `T::default()` is returned so
/// decoding goes on; under any other deserializer it is an ordinary error.
pub fn invalid<T: Default, E: de::Error>(message: impl fmt::Display) -> Result<T, E> {
    if collecting() {
        let pushed = ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            if let Some((pos, path, issues)) = a.last_mut() {
                issues.push(Issue {
                    pos: *pos,
                    path: path.clone(),
                    message: message.to_string(),
                    hint: None,
                });
                true
            } else {
                false
            }
        });
        if pushed {
            return Ok(T::default());
        }
    }
    Err(E::custom(message))
}

/// For custom `Deserialize` impls that walk a mapping themselves: report the key just read
/// as unknown, with a suggestion from `expected`.
pub fn unknown_key<E: de::Error>(key: &str, expected: &'static [&'static str]) -> Result<(), E> {
    let hint = did_you_mean(key, expected.iter().copied())
        .or_else(|| Some(format!("expected one of: {}", expected.join(", "))));
    if collecting()
        && let Some((pos, path)) = LAST_KEY.with(|k| k.borrow().clone())
    {
        let pushed = ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            a.last_mut().map(|(_, _, issues)| {
                issues.push(Issue {
                    pos,
                    path,
                    message: "unknown field".into(),
                    hint: hint.clone(),
                })
            })
        });
        if pushed.is_some() {
            return Ok(());
        }
    }
    Err(E::custom(format!("unknown field `{key}`")))
}

/// The error type; only used when a visitor itself fails, which the model avoids.
#[derive(Debug)]
pub struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

fn child_key(parent: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '+');
    match (parent.is_empty(), simple) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

fn child_index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    ctx: &'a Ctx,
}

/// What a plain or quoted scalar means under YAML 1.1 rules.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
}

pub fn resolve_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

/// Integers as yaml.v2 reads them: optional sign, `_` separators, `0x`, `0o`, `0b` prefixes and
/// a leading `0` meaning octal.
pub fn resolve_int(text: &str) -> Option<i128> {
    let t: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, &t[..]),
    };
    if digits.is_empty() {
        return None;
    }
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o").or(digits.strip_prefix("0O")) {
        (8, o)
    } else if let Some(b) = digits.strip_prefix("0b").or(digits.strip_prefix("0B")) {
        (2, b)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i128::from_str_radix(body, radix).ok()?;
    Some(if neg { -v } else { v })
}

pub fn resolve_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let t: String = text.chars().filter(|c| *c != '_').collect();
    let body = t.trim_start_matches(['-', '+']);
    let looks_numeric = body
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if !looks_numeric {
        return None;
    }
    t.parse().ok()
}

/// Resolves a scalar node the way an untyped YAML 1.1 consumer would.
pub fn resolve(node: &Node) -> Resolved<'_> {
    let NodeKind::Scalar { text, style, tag } = &node.kind else {
        return Resolved::Null;
    };
    match tag.as_deref() {
        Some("str") => return Resolved::Str(text),
        Some("null") => return Resolved::Null,
        Some("bool") => {
            return resolve_bool(text).map_or(Resolved::Str(text), Resolved::Bool);
        }
        Some("int") => return resolve_int(text).map_or(Resolved::Str(text), Resolved::Int),
        Some("float") => return resolve_float(text).map_or(Resolved::Str(text), Resolved::Float),
        _ => {}
    }
    if *style != Style::Plain {
        return Resolved::Str(text);
    }
    if node.is_null() {
        return Resolved::Null;
    }
    if let Some(b) = resolve_bool(text) {
        return Resolved::Bool(b);
    }
    if let Some(i) = resolve_int(text) {
        return Resolved::Int(i);
    }
    if let Some(f) = resolve_float(text) {
        return Resolved::Float(f);
    }
    Resolved::Str(text)
}

impl<'a> NodeDe<'a> {
    fn report(&self, message: impl Into<String>, hint: Option<String>) {
        self.ctx.report(self.node.pos, &self.path, message, hint);
    }

    fn mismatch(&self, expected: &str) {
        let hint = match &self.node.kind {
            NodeKind::Scalar {
                style: Style::Quoted,
                ..
            } if expected.contains("number") || expected.contains("boolean") => {
                Some("remove the quotes".to_string())
            }
            _ => None,
        };
        self.report(
            format!("expected {expected}, found {}", self.node.describe()),
            hint,
        );
    }

    /// Runs `f` with this node registered for [`invalid`] reports.
    fn with_active<R>(&self, f: impl FnOnce() -> R) -> R {
        ACTIVE.with(|a| {
            a.borrow_mut()
                .push((self.node.pos, self.path.clone(), Vec::new()))
        });
        let r = f();
        let (_, _, issues) = ACTIVE.with(|a| a.borrow_mut().pop()).unwrap_or_default();
        self.ctx.issues.borrow_mut().extend(issues);
        r
    }

    fn integer(&self, min: i128, max: i128) -> i128 {
        match &self.node.kind {
            NodeKind::Scalar { .. } => match resolve(self.node) {
                Resolved::Int(i) if (min..=max).contains(&i) => i,
                Resolved::Int(i) => {
                    self.report(
                        format!("{i} is out of range (allowed: {min} to {max})"),
                        None,
                    );
                    0
                }
                Resolved::Float(f)
                    if f.fract() == 0.0 && (min as f64..=max as f64).contains(&f) =>
                {
                    f as i128
                }
                Resolved::Null => 0,
                _ => {
                    self.mismatch("a whole number");
                    0
                }
            },
            _ => {
                self.mismatch("a whole number");
                0
            }
        }
    }

    fn float(&self) -> f64 {
        match resolve(self.node) {
            Resolved::Int(i) => i as f64,
            Resolved::Float(f) => f,
            Resolved::Null if matches!(self.node.kind, NodeKind::Scalar { .. }) => 0.0,
            _ => {
                self.mismatch("a number");
                0.0
            }
        }
    }

    fn string(&self) -> &'a str {
        match &self.node.kind {
            NodeKind::Scalar { text, .. } => {
                if self.node.is_null() {
                    ""
                } else {
                    text
                }
            }
            _ => {
                self.mismatch("a string");
                ""
            }
        }
    }
}

macro_rules! de_int {
    ($($method:ident $visit:ident $t:ty;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self.integer(<$t>::MIN as i128, <$t>::MAX as i128) as $t;
            visitor.$visit(v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.with_active(|| match &self.node.kind {
            NodeKind::Map(entries) => {
                visitor.visit_map(MapAcc::new(entries, &self.path, self.ctx, None))
            }
            NodeKind::Seq(items) => visitor.visit_seq(SeqAcc::new(items, &self.path, self.ctx)),
            NodeKind::Scalar { .. } => match resolve(self.node) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => {
                    if let Ok(v) = i64::try_from(i) {
                        visitor.visit_i64(v)
                    } else if let Ok(v) = u64::try_from(i) {
                        visitor.visit_u64(v)
                    } else {
                        visitor.visit_str(self.node.scalar_text().unwrap_or(""))
                    }
                }
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str(s) => visitor.visit_str(s),
            },
        })
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let b = match resolve(self.node) {
            Resolved::Bool(b) => b,
            Resolved::Null if matches!(self.node.kind, NodeKind::Scalar { .. }) => false,
            _ => {
                self.mismatch("a boolean (true or false)");
                false
            }
        };
        visitor.visit_bool(b)
    }

    de_int! {
        deserialize_i8 visit_i8 i8;
        deserialize_i16 visit_i16 i16;
        deserialize_i32 visit_i32 i32;
        deserialize_i64 visit_i64 i64;
        deserialize_u8 visit_u8 u8;
        deserialize_u16 visit_u16 u16;
        deserialize_u32 visit_u32 u32;
        deserialize_u64 visit_u64 u64;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f32(self.float() as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_f64(self.float())
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let s = self.string();
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => {
                self.mismatch("a single character");
                visitor.visit_char(' ')
            }
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let s = self.string();
        self.with_active(|| visitor.visit_str(s))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let s = self.string();
        visitor.visit_bytes(s.as_bytes())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if !self.node.is_null() {
            self.mismatch("nothing (null)");
        }
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Seq(items) => visitor.visit_seq(SeqAcc::new(items, &self.path, self.ctx)),
            _ => {
                if !self.node.is_null() {
                    self.mismatch("a list");
                }
                visitor.visit_seq(SeqAcc::new(&[], &self.path, self.ctx))
            }
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Map(entries) => {
                visitor.visit_map(MapAcc::new(entries, &self.path, self.ctx, None))
            }
            _ => {
                if !self.node.is_null() {
                    self.mismatch("a mapping (key: value pairs)");
                }
                visitor.visit_map(MapAcc::new(&[], &self.path, self.ctx, None))
            }
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.kind {
            NodeKind::Map(entries) => {
                visitor.visit_map(MapAcc::new(entries, &self.path, self.ctx, Some(fields)))
            }
            _ => {
                if !self.node.is_null() {
                    self.mismatch("a mapping (key: value pairs)");
                }
                visitor.visit_map(MapAcc::new(&[], &self.path, self.ctx, Some(fields)))
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let s = self.string();
        if !variants.contains(&s) {
            self.report(
                format!(
                    "unknown value {s:?}, expected one of: {}",
                    variants.join(", ")
                ),
                did_you_mean(s, variants.iter().copied()),
            );
            let first = variants.first().copied().unwrap_or("");
            return visitor.visit_enum(first.into_deserializer());
        }
        visitor.visit_enum(s.into_deserializer())
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.node.scalar_text().unwrap_or(""))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct SeqAcc<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'a str,
    ctx: &'a Ctx,
}

impl<'a> SeqAcc<'a> {
    fn new(items: &'a [Node], path: &'a str, ctx: &'a Ctx) -> Self {
        Self {
            items: items.iter(),
            index: 0,
            path,
            ctx,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqAcc<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = child_index(self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe {
            node,
            path,
            ctx: self.ctx,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAcc<'a> {
    entries: std::slice::Iter<'a, Entry>,
    current: Option<&'a Entry>,
    path: &'a str,
    ctx: &'a Ctx,
    fields: Option<&'static [&'static str]>,
}

impl<'a> MapAcc<'a> {
    fn new(
        entries: &'a [Entry],
        path: &'a str,
        ctx: &'a Ctx,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        Self {
            entries: entries.iter(),
            current: None,
            path,
            ctx,
            fields,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapAcc<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        let key = entry.key_str();
        LAST_KEY.with(|k| *k.borrow_mut() = Some((entry.key.pos, child_key(self.path, key))));
        if let Some(fields) = self.fields
            && !fields.contains(&key)
        {
            self.ctx.report(
                entry.key.pos,
                &child_key(self.path, key),
                "unknown field",
                did_you_mean(key, fields.iter().copied())
                    .or_else(|| Some(format!("expected one of: {}", fields.join(", ")))),
            );
        }
        seed.deserialize(KeyDe(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .current
            .take()
            .ok_or_else(|| DeError("value requested before key".into()))?;
        seed.deserialize(NodeDe {
            node: &entry.value,
            path: child_key(self.path, entry.key_str()),
            ctx: self.ctx,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Map keys are always handed over as strings (also `on:` or `1:` in free-form config).
struct KeyDe<'a>(&'a str);

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::super::envsubst::SourceMap;
    use super::super::yaml::parse_documents;
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default, rename_all = "camelCase")]
    struct Ssh {
        address: String,
        port: u16,
        key_path: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Host {
        ssh: Option<Ssh>,
        role: String,
        reset: bool,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct Doc {
        hosts: Vec<Host>,
    }

    fn run(text: &str) -> (Doc, Vec<Issue>) {
        let (docs, errs) = parse_documents(text, &SourceMap::identity(text));
        assert!(errs.is_empty(), "{errs:?}");
        decode::<Doc>(&docs[0].root, "spec")
    }

    #[test]
    fn collects_every_error() {
        let (doc, issues) = run(concat!(
            "hosts:\n",
            "- ssh:\n",
            "    adress: 10.0.0.1\n",
            "    port: 70000\n",
            "  role: controller\n",
            "  reset: maybe\n",
            "- ssh: {address: 10.0.0.2, port: \"22\"}\n",
            "  rol: worker\n",
        ));
        let got: Vec<_> = issues
            .iter()
            .map(|i| {
                format!(
                    "{}:{} {} {} {:?}",
                    i.pos.line, i.pos.col, i.path, i.message, i.hint
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                "3:5 spec.hosts[0].ssh.adress unknown field Some(\"did you mean \\\"address\\\"?\")",
                "4:11 spec.hosts[0].ssh.port 70000 is out of range (allowed: 0 to 65535) None",
                "6:10 spec.hosts[0].reset expected a boolean (true or false), found \"maybe\" None",
                "7:34 spec.hosts[1].ssh.port expected a whole number, found \"22\" Some(\"remove the quotes\")",
                "8:3 spec.hosts[1].rol unknown field Some(\"did you mean \\\"role\\\"?\")",
            ]
        );
        assert_eq!(doc.hosts.len(), 2);
        assert_eq!(doc.hosts[0].role, "controller");
        assert_eq!(doc.hosts[1].ssh.as_ref().unwrap().address, "10.0.0.2");
    }

    #[test]
    fn yaml11_scalars() {
        let (doc, issues) = run("hosts:\n- reset: yes\n  ssh: {port: 0x16}\n- reset: off\n");
        assert!(issues.is_empty(), "{issues:?}");
        assert!(doc.hosts[0].reset);
        assert_eq!(doc.hosts[0].ssh.as_ref().unwrap().port, 22);
        assert!(!doc.hosts[1].reset);
        assert_eq!(resolve_int("0755"), Some(493));
        assert_eq!(resolve_int("1_000"), Some(1000));
        assert_eq!(resolve_int("08"), None);
        assert_eq!(resolve_float("1.30"), Some(1.3));
        assert_eq!(resolve_float("v1.30"), None);
    }

    #[test]
    fn wrong_shapes_are_reported_not_fatal() {
        let (doc, issues) = run("hosts:\n  ssh: x\n");
        assert_eq!(doc.hosts.len(), 0);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].message, "expected a list, found a mapping");
        assert_eq!((issues[0].pos.line, issues[0].pos.col), (2, 3));
    }
}
