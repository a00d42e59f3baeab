//! Edits keep everything outside the entry they touch: comments, order, blank lines.

use super::*;
use crate::policy::{rule_changes, Inventory};

const DOC: &str = r#"{
  "version": 1,
  // Teams.
  "groups": {
    "group:eng": ["user:alice@example.com"], // the engineers
    "group:ops": ["user:bob@example.com"],
  },
  "tag_owners": { "tag:db": ["group:ops"] },
  "rules": [
    // SSH for engineers
    { "src": ["group:eng"], "dst": ["tag:db:22"], "proto": "tcp" },
    /* ops everywhere */
    { "src": ["group:ops"], "dst": ["*:*"] },
  ],
}
"#;

fn rule(src: &str, dst: &str, proto: Proto, d: Option<&str>) -> RuleSpec {
    RuleSpec {
        src: vec![src.into()],
        dst: vec![dst.into()],
        proto,
        description: d.map(Into::into),
    }
}

#[test]
fn add_rule_keeps_comments_and_order() {
    let r = rule(
        "group:eng",
        "tag:db:5432",
        Proto::Tcp,
        Some("eng reads the DB"),
    );
    let t = apply(DOC, &[Edit::AddRule { rule: r.clone() }]).unwrap();
    // Every original line is still there, in order.
    let mut it = t.lines();
    for l in DOC.lines() {
        assert!(it.any(|x| x == l), "lost line {l:?} in\n{t}");
    }
    assert!(t.contains(
        "    { \"src\": [\"group:eng\"], \"dst\": [\"tag:db:5432\"], \"proto\": \"tcp\", \"description\": \"eng reads the DB\" },\n  ],"
    ), "{t}");
    let o = outline(&t).unwrap();
    assert_eq!(o.rules.len(), 3);
    assert_eq!(o.rules[2].rule, r);
    assert_eq!(o.rules[2].line, 14);
    // The parsed policy carries the description.
    let p = Policy::parse(&t).unwrap();
    assert_eq!(p.rules[2].description.as_deref(), Some("eng reads the DB"));
}

#[test]
fn replace_and_remove_rules() {
    let r = rule("group:ops", "tag:db:*", Proto::Any, None);
    let t = apply(
        DOC,
        &[Edit::ReplaceRule {
            index: 1,
            rule: r.clone(),
        }],
    )
    .unwrap();
    assert!(t.contains("/* ops everywhere */\n    { \"src\": [\"group:ops\"], \"dst\": [\"tag:db:*\"], \"proto\": \"any\" },"), "{t}");
    // Removing the first rule takes its comment line too, and nothing else.
    let t = apply(DOC, &[Edit::RemoveRule { index: 0 }]).unwrap();
    assert!(!t.contains("SSH for engineers"));
    assert!(!t.contains("tag:db:22"));
    assert!(t.contains("/* ops everywhere */"));
    assert_eq!(DOC.lines().count() - 2, t.lines().count());
    // The last one, then the other: an empty list remains.
    let t = apply(&t, &[Edit::RemoveRule { index: 0 }]).unwrap();
    assert_eq!(outline(&t).unwrap().rules.len(), 0);
    assert!(Policy::parse(&t).is_ok(), "{t}");
    // Out of range names the edit.
    match apply(DOC, &[Edit::RemoveRule { index: 5 }]) {
        Err(EditError::Invalid { field, message }) => {
            assert_eq!(field, "edits[0].index");
            assert!(message.contains("no rule 6"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn groups_tags_hosts() {
    let t = apply(
        DOC,
        &[
            Edit::SetGroup {
                name: "group:eng".into(),
                members: vec!["user:alice@example.com".into(), "laptop-1".into()],
            },
            Edit::SetGroup {
                name: "group:sales".into(),
                members: vec!["user:carol@example.com".into()],
            },
            Edit::SetHost {
                name: "db-net".into(),
                value: "100.64.10.0/24".into(),
            },
            Edit::SetTagOwners {
                tag: "tag:web".into(),
                owners: vec![],
            },
        ],
    )
    .unwrap();
    assert!(
        t.contains("\"group:eng\": [\"user:alice@example.com\", \"laptop-1\"], // the engineers"),
        "{t}"
    );
    let o = outline(&t).unwrap();
    let names: Vec<_> = o.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["group:eng", "group:ops", "group:sales"]);
    assert_eq!(o.hosts[0].value, "100.64.10.0/24");
    assert_eq!(o.tag_owners.len(), 2);
    // A section that did not exist ("hosts") was added and parses.
    let p = Policy::parse(&t).unwrap();
    assert!(p.hosts.contains_key("db-net"));
    let t2 = apply(
        &t,
        &[
            Edit::RemoveGroup {
                name: "group:sales".into(),
            },
            Edit::RemoveHost {
                name: "db-net".into(),
            },
            Edit::RemoveTag {
                tag: "tag:web".into(),
            },
        ],
    )
    .unwrap();
    let o2 = outline(&t2).unwrap();
    assert_eq!(o2.groups.len(), 2);
    assert!(o2.hosts.is_empty());
    assert_eq!(o2.tag_owners.len(), 1);
    assert!(matches!(
        apply(
            DOC,
            &[Edit::RemoveGroup {
                name: "group:nope".into()
            }]
        ),
        Err(EditError::Invalid { .. })
    ));
}

#[test]
fn inline_and_compact_documents() {
    let t = r#"{"version":1,"rules":[{"src":["*"],"dst":["*:*"]}]}"#;
    let t2 = apply(
        t,
        &[Edit::AddRule {
            rule: rule("a", "b:22", Proto::Tcp, None),
        }],
    )
    .unwrap();
    assert_eq!(outline(&t2).unwrap().rules.len(), 2, "{t2}");
    let t3 = apply(&t2, &[Edit::RemoveRule { index: 0 }]).unwrap();
    assert_eq!(outline(&t3).unwrap().rules[0].rule.src, ["a"]);
    let bare = "{ \"version\": 1 }";
    let t4 = apply(
        bare,
        &[Edit::AddRule {
            rule: rule("*", "*:*", Proto::Any, None),
        }],
    )
    .unwrap();
    assert_eq!(outline(&t4).unwrap().rules.len(), 1, "{t4}");
    let empty = "{\n  \"version\": 1,\n  \"rules\": [],\n}";
    let t5 = apply(
        empty,
        &[Edit::AddRule {
            rule: rule("*", "*:*", Proto::Any, None),
        }],
    )
    .unwrap();
    assert!(Policy::parse(&t5).is_ok(), "{t5}");
}

#[test]
fn bad_edits_are_refused_and_name_their_field() {
    let bad = |r: RuleSpec| apply(DOC, &[Edit::AddRule { rule: r }]).unwrap_err();
    match bad(rule("group:eng", "tag:db:99999", Proto::Tcp, None)) {
        EditError::Invalid { field, message } => {
            assert_eq!(field, "edits[0]");
            assert!(message.contains("99999"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    match bad(RuleSpec {
        src: vec![],
        ..rule("a", "b", Proto::Any, None)
    }) {
        EditError::Invalid { field, .. } => assert_eq!(field, "edits[0].rule.src"),
        e => panic!("{e:?}"),
    }
    match bad(rule("a", "b:1", Proto::Tcp, Some("line\nbreak"))) {
        EditError::Invalid { field, .. } => assert_eq!(field, "edits[0].rule.description"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        apply("{ \"version\": 1, ", &[]),
        Err(EditError::Unparsable(_))
    ));
    // Hostile strings stay strings.
    let t = apply(
        DOC,
        &[Edit::AddRule {
            rule: rule("a\"], \"x", "b:1", Proto::Tcp, None),
        }],
    );
    assert!(t.is_err() || outline(&t.unwrap()).unwrap().rules[2].rule.src == ["a\"], \"x"]);
}

#[test]
fn rule_changes_ignore_formatting_and_see_descriptions() {
    let old = Policy::parse(DOC).unwrap();
    let t = apply(
        DOC,
        &[Edit::AddRule {
            rule: rule("group:eng", "tag:db:5432", Proto::Tcp, Some("db")),
        }],
    )
    .unwrap();
    let new = Policy::parse(&t).unwrap();
    let (added, removed) = rule_changes(&old, &new);
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].description.as_deref(), Some("db"));
    assert!(removed.is_empty());
    // Reformatting (reordering, `*` vs `*:*`) is not a change.
    let same = "{\"version\":1,\"groups\":{\"group:eng\":[\"user:alice@example.com\"],\"group:ops\":[\"user:bob@example.com\"]},\"tag_owners\":{\"tag:db\":[\"group:ops\"]},\"rules\":[{\"src\":[\"group:ops\"],\"dst\":[\"*\"]},{\"src\":[\"group:eng\"],\"dst\":[\"tag:db:22\"],\"proto\":\"tcp\"}]}";
    let (a, r) = rule_changes(&old, &Policy::parse(same).unwrap());
    assert!(a.is_empty() && r.is_empty(), "{a:?} {r:?}");
    // The edited text still validates against an inventory like the original.
    assert!(crate::policy::validate(&new, &Inventory::default()).is_ok());
}
