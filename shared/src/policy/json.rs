//! Lenient JSON front end for policy files: strips `//` and `/* */` comments and
//! trailing commas (replacing them with spaces so byte offsets, and thus serde_json's
//! line/column, are unchanged), then parses into a tree that remembers where every
//! value starts, so later errors can point at the offending text.

use super::model::Pos;

/// A JSON value with the byte offset where it starts in the source.
#[derive(Debug, Clone)]
pub struct SJson {
    pub at: usize,
    /// Offset just past the value's last byte.
    pub end: usize,
    pub v: JVal,
}

#[derive(Debug, Clone)]
pub enum JVal {
    Null,
    #[allow(dead_code)] // kept for completeness of the tree
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<SJson>),
    /// Keys keep their own offsets; order is the document's.
    Obj(Vec<(SJson, SJson)>),
}

impl JVal {
    pub fn kind(&self) -> &'static str {
        match self {
            JVal::Null => "null",
            JVal::Bool(_) => "a boolean",
            JVal::Num(_) => "a number",
            JVal::Str(_) => "a string",
            JVal::Arr(_) => "an array",
            JVal::Obj(_) => "an object",
        }
    }
}

/// Maps byte offsets to 1-based line and column.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }
    pub fn pos(&self, at: usize) -> Pos {
        let line = self.starts.partition_point(|s| *s <= at);
        let col = at - self.starts[line - 1] + 1;
        Pos {
            line: line as u32,
            column: col as u32,
        }
    }
}

/// Replaces comments and trailing commas with spaces (newlines inside block comments
/// are kept). An unterminated block comment is reported at its start.
pub fn strip(text: &str) -> Result<String, (usize, String)> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let mut in_str = false;
    // Offset of the last comma outside strings not yet followed by a value.
    let mut pending_comma: Option<usize> = None;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_str = true;
                pending_comma = None;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let start = i;
                let end = text[i + 2..].find("*/").map(|e| i + 2 + e + 2);
                let Some(end) = end else {
                    return Err((start, "unterminated /* comment".into()));
                };
                for o in &mut out[start..end] {
                    if *o != b'\n' {
                        *o = b' ';
                    }
                }
                i = end;
                continue;
            }
            b',' => pending_comma = Some(i),
            b']' | b'}' => {
                if let Some(p) = pending_comma.take() {
                    out[p] = b' ';
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => pending_comma = None,
        }
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII spaces, outside strings, so this is UTF-8.
    String::from_utf8(out).map_err(|_| (0, "policy is not valid UTF-8".into()))
}

/// Parses text that serde_json already accepted, keeping offsets. Duplicate object keys
/// are returned as (offset, key) so the caller can report them.
pub fn parse_spanned(text: &str, dups: &mut Vec<(usize, String)>) -> SJson {
    let mut p = P {
        b: text.as_bytes(),
        s: text,
        i: 0,
        dups,
    };
    p.value()
}

struct P<'a, 'd> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
    dups: &'d mut Vec<(usize, String)>,
}

impl P<'_, '_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn value(&mut self) -> SJson {
        self.ws();
        let at = self.i;
        let v = match self.b.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut items: Vec<(SJson, SJson)> = Vec::new();
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b'}') | None => {
                            self.i += 1;
                            break;
                        }
                        Some(b',') => {
                            self.i += 1;
                            continue;
                        }
                        _ => {}
                    }
                    let k = self.value();
                    self.ws();
                    self.i += 1; // ':'
                    let v = self.value();
                    if let JVal::Str(ks) = &k.v {
                        if items
                            .iter()
                            .any(|(o, _)| matches!(&o.v, JVal::Str(s) if s == ks))
                        {
                            self.dups.push((k.at, ks.clone()));
                        }
                    }
                    items.push((k, v));
                }
                JVal::Obj(items)
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b']') | None => {
                            self.i += 1;
                            break;
                        }
                        Some(b',') => {
                            self.i += 1;
                            continue;
                        }
                        _ => items.push(self.value()),
                    }
                }
                JVal::Arr(items)
            }
            Some(b'"') => {
                let start = self.i;
                self.i += 1;
                while self.i < self.b.len() && self.b[self.i] != b'"' {
                    if self.b[self.i] == b'\\' {
                        self.i += 1;
                    }
                    self.i += 1;
                }
                self.i += 1;
                let raw = &self.s[start..self.i.min(self.s.len())];
                JVal::Str(serde_json::from_str(raw).unwrap_or_default())
            }
            _ => {
                let start = self.i;
                while self.i < self.b.len() && !b",]} \t\r\n".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    "null" => JVal::Null,
                    "true" => JVal::Bool(true),
                    "false" => JVal::Bool(false),
                    n => JVal::Num(n.to_string()),
                }
            }
        };
        SJson {
            at,
            end: self.i.min(self.b.len()),
            v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_keeps_offsets_and_strings() {
        let t = "{ // c\n \"a\": \"x//y/*z*/\", /* b\n */ \"b\": [1,2,], }";
        let s = strip(t).unwrap();
        assert_eq!(s.len(), t.len());
        assert_eq!(s.matches('\n').count(), 2);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"], "x//y/*z*/");
        assert_eq!(v["b"][1], 2);
        assert!(strip("{ /* open").is_err());
    }

    #[test]
    fn spans_point_at_values() {
        let t = "{\n  \"k\": [\"v\", 3],\n  \"k\": 1\n}";
        let idx = LineIndex::new(t);
        let mut d = vec![];
        let v = parse_spanned(t, &mut d);
        let JVal::Obj(items) = v.v else { panic!() };
        let JVal::Arr(a) = &items[0].1.v else {
            panic!()
        };
        let p = idx.pos(a[1].at);
        assert_eq!((p.line, p.column), (2, 14));
        assert_eq!(d.len(), 1);
        assert_eq!(idx.pos(d[0].0).line, 3);
    }
}
