//! The console's structure, checked: imports point only down, the three HTTP surfaces
//! never import each other, there is no import cycle between modules, only the service
//! layer writes, and every file is small and says its role.
//!
//! The core crate (`console/core`) cannot import the HTTP layer at all (it does not
//! depend on axum, nor on this crate); this test checks what the compiler cannot: the
//! order of the modules inside each crate. It reads `crate::…` paths the way
//! `modgraph.py` does (comments and `#[cfg(test)]` tails left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Rank of each top-level module; a module may use modules of its own rank or lower.
const CONSOLE_LAYERS: &[(&str, u8)] = &[
    ("infra", 0),
    // re-exports of the core crate
    ("store", 1),
    ("domain", 1),
    ("bus", 1),
    ("service", 1),
    ("metrics", 1),
    ("http", 2),
    ("server", 3),
    ("relay", 3),
    ("stun", 3),
    ("syslog", 3),
    ("scrape", 3),
    ("cli", 4),
];
// `metrics` is a leaf (it names no other module) that every layer may count in.
const CORE_LAYERS: &[(&str, u8)] = &[
    ("metrics", 0),
    ("store", 0),
    ("domain", 1),
    ("bus", 2),
    ("service", 3),
];
/// The HTTP surfaces: none may name another.
const SURFACES: &[&str] = &["api", "agent_api", "web"];
/// What the surfaces share inside `http`; these may not name a surface.
const HTTP_SHARED: &[&str] = &[
    "error",
    "json",
    "metrics",
    "principal",
    "query",
    "routes",
    "session",
    "state",
];
const MAX_LINES: usize = 800;

struct Module {
    path: Vec<String>,
    file: PathBuf,
    refs: BTreeSet<Vec<String>>,
    text: String,
    lines: usize,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every module of a crate's `src/` with the `crate::` paths it names.
fn modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let path_re = |s: &str| -> BTreeSet<Vec<String>> {
        let mut refs = BTreeSet::new();
        let mut rest = s;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + 7..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `zmesh_console_core::…`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let p: Vec<String> = part
                        .trim()
                        .split("::")
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty())
                        .collect();
                    if !p.is_empty() {
                        refs.insert(p);
                    }
                }
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let p: Vec<String> = rest[..end]
                .split("::")
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect();
            if !p.is_empty() {
                refs.insert(p);
            }
        }
        refs
    };
    files
        .into_iter()
        .map(|f| {
            let full = std::fs::read_to_string(&f).unwrap();
            let lines = full.lines().count();
            let mut text = full.clone();
            if let Some(i) = text.find("#[cfg(test)]") {
                text.truncate(i);
            }
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let rel = f.strip_prefix(src).unwrap().with_extension("");
            let mut path: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                path.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                path.pop();
            }
            Module {
                path,
                refs: path_re(&code),
                file: f,
                text: full,
                lines,
            }
        })
        .collect()
}

fn rank(layers: &[(&str, u8)], top: &str) -> Option<u8> {
    layers.iter().find(|(n, _)| *n == top).map(|(_, r)| *r)
}

/// Upward imports between top-level modules.
fn upward(mods: &[Module], layers: &[(&str, u8)]) -> Vec<String> {
    let mut bad = Vec::new();
    for m in mods {
        let Some(me) = m.path.first() else { continue };
        let Some(mine) = rank(layers, me) else {
            continue;
        };
        for r in &m.refs {
            if let Some(theirs) = rank(layers, &r[0]) {
                if theirs > mine {
                    bad.push(format!("{} -> crate::{}", m.path.join("::"), r.join("::")));
                }
            }
        }
    }
    bad
}

/// Strongly connected components of more than one module at `depth`.
fn cycles(mods: &[Module], depth: usize) -> Vec<Vec<String>> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in mods {
        if m.path.is_empty() {
            continue;
        }
        let me: Vec<String> = m.path.iter().take(depth).cloned().collect();
        for r in &m.refs {
            // the longest prefix of the path that is a module of this crate
            let target: Vec<String> = (1..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| known.contains(p))
                .unwrap_or_else(|| r[..1].to_vec());
            let tgt: Vec<String> = target.into_iter().take(depth).collect();
            if tgt.is_empty() || tgt.starts_with(&me) || me.starts_with(&tgt) {
                continue;
            }
            edges
                .entry(me.join("::"))
                .or_default()
                .insert(tgt.join("::"));
        }
    }
    // Tarjan's algorithm, iterative enough for a few hundred modules.
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        out: Vec<Vec<String>>,
    }
    fn visit(t: &mut T, v: &str) {
        let i = t.index.len();
        t.index.insert(v.into(), i);
        t.low.insert(v.into(), i);
        t.stack.push(v.into());
        t.on.insert(v.into());
        let next: Vec<String> = t
            .edges
            .get(v)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for w in next {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<String> = edges
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.clone()).chain(v.iter().cloned()))
        .collect();
    for n in nodes {
        if !t.index.contains_key(&n) {
            visit(&mut t, &n);
        }
    }
    t.out
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn console_imports_point_down() {
    let mods = modules(&crate_dir().join("src"));
    assert!(mods.len() > 30, "read the console's modules");
    let bad = upward(&mods, CONSOLE_LAYERS);
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
    let mut sideways = Vec::new();
    for m in &mods {
        let mine: Vec<&str> = m
            .path
            .iter()
            .map(String::as_str)
            .filter(|p| SURFACES.contains(p))
            .collect();
        let shared =
            m.path.len() >= 2 && m.path[0] == "http" && HTTP_SHARED.contains(&m.path[1].as_str());
        for r in &m.refs {
            let theirs: Vec<&str> = r
                .iter()
                .map(String::as_str)
                .filter(|p| SURFACES.contains(p))
                .collect();
            let crosses = matches!((mine.last(), theirs.last()), (Some(a), Some(b)) if a != b);
            if crosses || (shared && !theirs.is_empty()) {
                sideways.push(format!("{} -> crate::{}", m.path.join("::"), r.join("::")));
            }
        }
    }
    assert!(
        sideways.is_empty(),
        "the HTTP surfaces must not import each other (nor the shared HTTP modules them):\n{}",
        sideways.join("\n")
    );
}

#[test]
fn core_imports_point_down() {
    let mods = modules(&crate_dir().join("core/src"));
    assert!(mods.len() > 20, "read the core crate's modules");
    let bad = upward(&mods, CORE_LAYERS);
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn no_module_cycles() {
    for src in ["src", "core/src"] {
        let mods = modules(&crate_dir().join(src));
        for depth in [1, 2] {
            let c = cycles(&mods, depth);
            assert!(c.is_empty(), "{src}: import cycles at depth {depth}: {c:?}");
        }
    }
}

#[test]
fn only_the_service_layer_writes() {
    // A writing store handle is `store.acting(ctx)`; the store's own methods and the
    // services are the only places that may take one.
    let mut bad = Vec::new();
    for src in ["src", "core/src"] {
        for m in modules(&crate_dir().join(src)) {
            let allowed = src == "core/src"
                && matches!(
                    m.path.first().map(String::as_str),
                    Some("service" | "store")
                );
            let code = m.text.split("#[cfg(test)]").next().unwrap_or("");
            if !allowed && code.contains(".acting(") {
                bad.push(m.file.display().to_string());
            }
        }
    }
    assert!(bad.is_empty(), "writes outside service/: {bad:?}");
}

#[test]
fn files_are_small_and_say_their_role() {
    let mut bad = Vec::new();
    for src in ["src", "core/src"] {
        for m in modules(&crate_dir().join(src)) {
            if m.lines > MAX_LINES {
                bad.push(format!("{}: {} lines", m.file.display(), m.lines));
            }
            if !m.text.trim_start().starts_with("//!") {
                bad.push(format!("{}: no //! role header", m.file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The checks above can fail: an upward import, a sideways one and a cycle are caught.
#[test]
fn the_checks_catch_violations() {
    let m = |path: &[&str], refs: &[&[&str]]| Module {
        path: path.iter().map(|s| s.to_string()).collect(),
        file: PathBuf::new(),
        refs: refs
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect(),
        text: String::new(),
        lines: 0,
    };
    let up = [m(&["store", "devices"], &[&["service", "devices"]])];
    assert_eq!(upward(&up, CORE_LAYERS).len(), 1);
    let cyc = [
        m(&["domain", "a"], &[&["domain", "b", "f"]]),
        m(&["domain", "b"], &[&["domain", "a"]]),
    ];
    assert_eq!(cycles(&cyc, 2).len(), 1);
    assert!(cycles(&cyc, 1).is_empty());
}
