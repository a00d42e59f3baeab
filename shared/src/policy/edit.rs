//! Structured edits of a policy *text*, for the console's visual editor: add, replace or
//! remove a rule, set or remove a group, a tag's owners or a host alias. Each edit is a
//! splice of the original text at the spans the lenient parser recorded, so every
//! comment, blank line and key order outside the edited entry survives, and the JSON
//! view and the visual view are always the same document.
//!
//! What an edit loses, by design: comments *inside* the entry it replaces (the entry is
//! rewritten as one line), and, when an entry is removed, the whole-line `//` comments
//! directly above it (they are taken to describe it). [`outline`] is the read side: the
//! document as tables, in document order.

use serde::{Deserialize, Serialize};

use super::json::{self, JVal, LineIndex, SJson};
use super::model::{PolicyError, Pos, Proto};
use super::parse::description_problem;
use super::Policy;

/// A rule as the visual editor shows and writes it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Sources: `*`, `group:NAME`, `tag:NAME`, `user:EMAIL`, device names, hosts, prefixes.
    pub src: Vec<String>,
    /// Destinations with their ports: `tag:db:5432`, `group:eng:22,443`, `web:*`.
    pub dst: Vec<String>,
    #[serde(default)]
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One structured edit. Rules are addressed by their index in `rules` (0-based).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Edit {
    AddRule {
        rule: RuleSpec,
    },
    ReplaceRule {
        index: usize,
        rule: RuleSpec,
    },
    RemoveRule {
        index: usize,
    },
    /// Creates the group or replaces its member list.
    SetGroup {
        name: String,
        members: Vec<String>,
    },
    RemoveGroup {
        name: String,
    },
    /// Declares the tag or replaces its owner list.
    SetTagOwners {
        tag: String,
        owners: Vec<String>,
    },
    RemoveTag {
        tag: String,
    },
    SetHost {
        name: String,
        value: String,
    },
    RemoveHost {
        name: String,
    },
}

/// Why an edit could not be made. `field` names the part of the edit at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The text being edited does not parse; fix it in the JSON view first.
    #[error("the policy text has problems; fix them first")]
    Unparsable(Vec<PolicyError>),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> EditError {
    EditError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A named list (group members, tag owners) with the line it starts on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedList {
    pub name: String,
    pub items: Vec<String>,
    pub line: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub value: String,
    pub line: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlineRule {
    #[serde(flatten)]
    pub rule: RuleSpec,
    pub line: u32,
}

/// The document as the visual editor shows it, in document order, values as written.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outline {
    pub groups: Vec<NamedList>,
    pub tag_owners: Vec<NamedList>,
    pub hosts: Vec<HostEntry>,
    pub rules: Vec<OutlineRule>,
    /// Self-tests are kept as written; the visual editor only counts them.
    pub tests: usize,
}

/// The parsed text: the cleaned copy (comments blanked, same offsets) and its tree.
struct Doc {
    root: SJson,
}

fn load(text: &str) -> Result<Doc, EditError> {
    Policy::parse(text).map_err(EditError::Unparsable)?;
    let clean = json::strip(text)
        .map_err(|(_, m)| EditError::Unparsable(vec![PolicyError::at(Pos::default(), m)]))?;
    let root = json::parse_spanned(&clean, &mut Vec::new());
    Ok(Doc { root })
}

fn obj(j: &SJson) -> &[(SJson, SJson)] {
    match &j.v {
        JVal::Obj(o) => o,
        _ => &[],
    }
}

fn arr(j: &SJson) -> &[SJson] {
    match &j.v {
        JVal::Arr(a) => a,
        _ => &[],
    }
}

fn s(j: &SJson) -> String {
    match &j.v {
        JVal::Str(s) => s.clone(),
        _ => String::new(),
    }
}

fn field<'a>(o: &'a SJson, name: &str) -> Option<&'a SJson> {
    obj(o)
        .iter()
        .find(|(k, _)| matches!(&k.v, JVal::Str(s) if s == name))
        .map(|(_, v)| v)
}

fn rule_spec(r: &SJson) -> RuleSpec {
    RuleSpec {
        src: field(r, "src")
            .map(|a| arr(a).iter().map(s).collect())
            .unwrap_or_default(),
        dst: field(r, "dst")
            .map(|a| arr(a).iter().map(s).collect())
            .unwrap_or_default(),
        proto: field(r, "proto")
            .and_then(|p| Proto::parse(&s(p)))
            .unwrap_or_default(),
        description: field(r, "description").map(s),
    }
}

/// The document as tables. Fails (with every problem) when the text does not parse.
pub fn outline(text: &str) -> Result<Outline, EditError> {
    let doc = load(text)?;
    let idx = LineIndex::new(text);
    let line = |j: &SJson| idx.pos(j.at).line;
    let lists = |name: &str| -> Vec<NamedList> {
        field(&doc.root, name)
            .map(|g| {
                obj(g)
                    .iter()
                    .map(|(k, v)| NamedList {
                        name: s(k),
                        items: arr(v).iter().map(s).collect(),
                        line: line(k),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Outline {
        groups: lists("groups"),
        tag_owners: lists("tag_owners"),
        hosts: field(&doc.root, "hosts")
            .map(|h| {
                obj(h)
                    .iter()
                    .map(|(k, v)| HostEntry {
                        name: s(k),
                        value: s(v),
                        line: line(k),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        rules: field(&doc.root, "rules")
            .map(|r| {
                arr(r)
                    .iter()
                    .map(|r| OutlineRule {
                        rule: rule_spec(r),
                        line: line(r),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        tests: field(&doc.root, "tests").map(|t| arr(t).len()).unwrap_or(0),
    })
}

/// Applies `edits` in order and returns the new text, which parses (shape and syntax;
/// the caller validates it against the inventory). Nothing is returned half-edited.
pub fn apply(text: &str, edits: &[Edit]) -> Result<String, EditError> {
    load(text)?;
    let mut out = text.to_string();
    for (i, e) in edits.iter().enumerate() {
        out = apply_one(&out, e).map_err(|err| match err {
            EditError::Invalid { field, message } => EditError::Invalid {
                field: format!("edits[{i}].{field}"),
                message,
            },
            other => other,
        })?;
        // An edit that yields text the parser refuses names itself, not the document.
        if let Err(errs) = Policy::parse(&out) {
            let first = errs
                .into_iter()
                .next()
                .map(|e| e.message)
                .unwrap_or_default();
            return Err(invalid(&format!("edits[{i}]"), first));
        }
    }
    Ok(out)
}

fn q(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into())
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|i| q(i)).collect();
    format!("[{}]", v.join(", "))
}

fn render_rule(r: &RuleSpec) -> Result<String, EditError> {
    if r.src.is_empty() {
        return Err(invalid("rule.src", "a rule needs at least one source"));
    }
    if r.dst.is_empty() {
        return Err(invalid("rule.dst", "a rule needs at least one destination"));
    }
    for (f, v) in [("rule.src", &r.src), ("rule.dst", &r.dst)] {
        if let Some(i) = v.iter().position(|x| x.trim().is_empty()) {
            return Err(invalid(&format!("{f}[{i}]"), "an entry is empty"));
        }
    }
    let mut t = format!(
        "{{ \"src\": {}, \"dst\": {}, \"proto\": {}",
        list(&r.src),
        list(&r.dst),
        q(r.proto.as_str())
    );
    if let Some(d) = r
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        if let Some(why) = description_problem(d) {
            return Err(invalid("rule.description", why));
        }
        t.push_str(&format!(", \"description\": {}", q(d)));
    }
    t.push_str(" }");
    Ok(t)
}

fn apply_one(text: &str, e: &Edit) -> Result<String, EditError> {
    let doc = load(text)?;
    let root = &doc.root;
    let rules = field(root, "rules");
    let rule_at = |index: usize| -> Result<&SJson, EditError> {
        rules.and_then(|r| arr(r).get(index)).ok_or_else(|| {
            invalid(
                "index",
                format!(
                    "there is no rule {} (the policy has {})",
                    index + 1,
                    rules.map(|r| arr(r).len()).unwrap_or(0)
                ),
            )
        })
    };
    match e {
        Edit::AddRule { rule } => {
            let t = render_rule(rule)?;
            Ok(append(text, root, "rules", rules, &t, '['))
        }
        Edit::ReplaceRule { index, rule } => {
            let r = rule_at(*index)?;
            Ok(splice(text, r.at, r.end, &render_rule(rule)?))
        }
        Edit::RemoveRule { index } => {
            let r = rule_at(*index)?;
            Ok(remove(
                text,
                rules.map(arr).unwrap_or(&[]),
                *index,
                r.at,
                r.end,
            ))
        }
        Edit::SetGroup { name, members } => set_entry(text, root, "groups", name, &list(members)),
        Edit::SetTagOwners { tag, owners } => {
            set_entry(text, root, "tag_owners", tag, &list(owners))
        }
        Edit::SetHost { name, value } => set_entry(text, root, "hosts", name, &q(value)),
        Edit::RemoveGroup { name } => remove_entry(text, root, "groups", name),
        Edit::RemoveTag { tag } => remove_entry(text, root, "tag_owners", tag),
        Edit::RemoveHost { name } => remove_entry(text, root, "hosts", name),
    }
}

fn set_entry(
    text: &str,
    root: &SJson,
    section: &str,
    name: &str,
    value: &str,
) -> Result<String, EditError> {
    if name.trim().is_empty() {
        return Err(invalid("name", "a name is required"));
    }
    let sec = field(root, section);
    if let Some(v) = sec.and_then(|o| field(o, name)) {
        return Ok(splice(text, v.at, v.end, value));
    }
    Ok(append(
        text,
        root,
        section,
        sec,
        &format!("{}: {value}", q(name)),
        '{',
    ))
}

fn remove_entry(text: &str, root: &SJson, section: &str, name: &str) -> Result<String, EditError> {
    let items = field(root, section).map(obj).unwrap_or(&[]);
    let i = items
        .iter()
        .position(|(k, _)| matches!(&k.v, JVal::Str(s) if s == name))
        .ok_or_else(|| invalid("name", format!("{section} has no entry {name:?}")))?;
    let (k, v) = &items[i];
    let spans: Vec<SJson> = items
        .iter()
        .map(|(k, v)| SJson {
            at: k.at,
            end: v.end,
            v: JVal::Null,
        })
        .collect();
    Ok(remove(text, &spans, i, k.at, v.end))
}

fn splice(text: &str, at: usize, end: usize, with: &str) -> String {
    format!("{}{}{}", &text[..at], with, &text[end..])
}

/// Start of the line holding `at`, and the whitespace that indents it.
fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0)
}

fn indent_of(text: &str, at: usize) -> &str {
    let ls = line_start(text, at);
    let line = &text[ls..];
    &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
}

/// From `end` (just past a value): skips blanks, one comma, and a `//` or `/* */`
/// comment on the same line. Returns (offset reached, a comma was seen, the offset just
/// past the newline when the rest of the line held nothing else).
fn after_value(text: &str, end: usize) -> (usize, bool, Option<usize>) {
    let b = text.as_bytes();
    let (mut i, mut comma) = (end, false);
    loop {
        match b.get(i) {
            Some(b' ' | b'\t' | b'\r') => i += 1,
            Some(b',') if !comma => {
                comma = true;
                i += 1
            }
            Some(b'/') if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            Some(b'/') if b.get(i + 1) == Some(&b'*') => match text[i + 2..].find("*/") {
                Some(e) if !text[i..i + 2 + e].contains('\n') => i += 2 + e + 2,
                _ => return (i, comma, None),
            },
            Some(b'\n') => return (i, comma, Some(i + 1)),
            None => return (i, comma, Some(i)),
            _ => return (i, comma, None),
        }
    }
}

/// Adds `item` as the last element of the container `key` of the root (created when
/// missing; `open` is `[` for arrays, `{` for objects), in the style of its siblings.
fn append(
    text: &str,
    root: &SJson,
    key: &str,
    container: Option<&SJson>,
    item: &str,
    open: char,
) -> String {
    let close = if open == '[' { ']' } else { '}' };
    let Some(c) = container else {
        // The section is missing: add it as the root's last field.
        let ci = indent_for_child(text, root);
        let block = format!("{}: {open}\n{ci}  {item},\n{ci}{close}", q(key));
        return append_to(text, root, &block);
    };
    append_to(text, c, item)
}

fn indent_for_child(text: &str, root: &SJson) -> String {
    // The children of the root are indented like its first child, or two spaces.
    match &root.v {
        JVal::Obj(o) if !o.is_empty() => indent_of(text, o[0].0.at).to_string(),
        _ => "  ".into(),
    }
}

/// Adds `item` after the last element of the array or object `c`.
fn append_to(text: &str, c: &SJson, item: &str) -> String {
    let last_end = match &c.v {
        JVal::Arr(a) => a.last().map(|l| (l.at, l.end)),
        JVal::Obj(o) => o.last().map(|(k, v)| (k.at, v.end)),
        _ => None,
    };
    match last_end {
        None => {
            // Empty container: open it onto its own lines.
            let ind = indent_of(text, c.at).to_string();
            let (o, cl) = (&text[c.at..c.at + 1], &text[c.end - 1..c.end]);
            splice(
                text,
                c.at,
                c.end,
                &format!("{o}\n{ind}  {item},\n{ind}{cl}"),
            )
        }
        Some((last_at, last_end)) => {
            let ind = indent_of(text, last_at).to_string();
            let on_own_line = line_start(text, last_at) != line_start(text, c.at);
            match after_value(text, last_end) {
                (_, comma, Some(nl)) if on_own_line => {
                    let t = splice(
                        text,
                        nl,
                        nl,
                        &format!("{ind}{item}{}\n", if comma { "," } else { "" }),
                    );
                    if comma {
                        t
                    } else {
                        splice(&t, last_end, last_end, ",")
                    }
                }
                _ => splice(text, last_end, last_end, &format!(", {item}")),
            }
        }
    }
}

/// Removes element `i` (spanning `at..end`) of a container whose elements are `items`.
fn remove(text: &str, items: &[SJson], i: usize, at: usize, end: usize) -> String {
    let ls = line_start(text, at);
    let alone_before = text[ls..at].trim().is_empty();
    let (reach, comma, nl) = after_value(text, end);
    if alone_before {
        if let Some(nl) = nl {
            // The element has its lines to itself: take them, with the whole-line
            // comments directly above it.
            let mut start = ls;
            while start > 0 {
                let prev = line_start(text, start - 1);
                let l = text[prev..start].trim();
                if l.starts_with("//") {
                    start = prev;
                } else {
                    break;
                }
            }
            let t = splice(text, start, nl, "");
            return if comma || i == 0 {
                t
            } else {
                drop_comma_after(&t, items[i - 1].end)
            };
        }
    }
    if comma {
        return splice(text, at, reach, "");
    }
    match i.checked_sub(1) {
        Some(p) => splice(text, items[p].end, end, ""),
        None => splice(text, at, end, ""),
    }
}

fn drop_comma_after(text: &str, end: usize) -> String {
    match text[end..].find(|c: char| !c.is_whitespace()) {
        Some(o) if text[end + o..].starts_with(',') => splice(text, end + o, end + o + 1, ""),
        _ => text.to_string(),
    }
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
