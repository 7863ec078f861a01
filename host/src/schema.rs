//! `heet schema`: the JSON Schema of heet.toml, for editors (Taplo, Even Better TOML) to
//! complete and check a definition as heet reads it.
//!
//! The shape comes from the structs heet.toml is read with (schemars over `definition.rs`'s
//! raw types, `deny_unknown_fields` and all), so a key heet accepts is a key the schema
//! knows. The descriptions come from docs/definition.md's annotated examples, the one place
//! each key is explained: a key there `key = value   # what it is` describes that key, a
//! table's header comment describes the table. A unit test fails when a key has none.

use serde_json::Value;

/// docs/definition.md, built in: its `toml` blocks describe every key.
const REFERENCE: &str = include_str!("../../docs/definition.md");

/// The schema, with a description on every key docs/definition.md explains.
pub fn schema() -> Value {
    let mut schema =
        serde_json::to_value(crate::definition::raw_schema()).expect("a schema is JSON");
    if let Some(root) = schema.as_object_mut() {
        root.insert(
            "title".into(),
            "heet.toml: a heet definition (heet schema)".into(),
        );
        root.insert(
            "description".into(),
            "What heet provisions for a project and its environments; see docs/definition.md"
                .into(),
        );
    }
    // The types' own doc comments are about reading them; the keys' descriptions say what
    // a user writes.
    if let Some(defs) = schema.get_mut("definitions").and_then(Value::as_object_mut) {
        for def in defs.values_mut().filter_map(Value::as_object_mut) {
            def.remove("description");
        }
    }
    for (path, text) in described(REFERENCE) {
        let Some(node) = pointer(&schema, &path).and_then(|at| schema.pointer_mut(&at)) else {
            continue;
        };
        describe(node, text);
    }
    schema
}

/// Gives `node` its description, unless a doc comment gave it one. Any value (`true`, as
/// schemars writes it) becomes `{}` to carry it; a bare `$ref` becomes `allOf: [ref]`, as
/// draft 7 ignores a `$ref`'s siblings.
fn describe(node: &mut Value, text: String) {
    if *node == Value::Bool(true) {
        *node = Value::Object(Default::default());
    }
    let Some(map) = node.as_object_mut() else {
        return;
    };
    if map.contains_key("description") {
        return;
    }
    if let Some(target) = map.remove("$ref") {
        map.insert("allOf".into(), serde_json::json!([{ "$ref": target }]));
    }
    map.insert("description".into(), text.into());
}

/// A key's place in heet.toml: its table path and name, and whether a segment is an array
/// of tables (`[[plugins.trust.keys]]`) whose items the keys below describe.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Items,
}

/// Each key (and table) the `toml` blocks of `doc` comment on, with its comment, in order.
/// A comment's continuation lines (only a comment, aligned under it) join it.
fn described(doc: &str) -> Vec<(Vec<Segment>, String)> {
    let mut out: Vec<(Vec<Segment>, String)> = Vec::new();
    let mut in_block = false;
    let mut table: Vec<Segment> = Vec::new();
    let mut last: Option<usize> = None;
    for line in doc.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = trimmed == "```toml";
            table.clear();
            last = None;
            continue;
        }
        if !in_block {
            continue;
        }
        if trimmed.starts_with('#') && line.starts_with(' ') {
            if let (Some(i), Some(more)) = (last, trimmed.strip_prefix('#')) {
                out[i].1.push(' ');
                out[i].1.push_str(more.trim());
            }
            continue;
        }
        // A commented-out key is an alternative, described all the same.
        let code = trimmed.strip_prefix("# ").unwrap_or(trimmed);
        let (code, comment) = match code.rfind("  # ") {
            Some(at) => (code[..at].trim(), Some(code[at + 4..].trim())),
            None => (code, None),
        };
        let header = |open: &str, close: &str| {
            code.strip_prefix(open)
                .and_then(|c| c.strip_suffix(close))
                .map(|path| path.split('.').map(|s| Segment::Key(s.trim().into())))
        };
        let path: Vec<Segment> = if let Some(p) = header("[[", "]]") {
            table = p.collect();
            let path = table.clone();
            table.push(Segment::Items);
            path
        } else if let Some(p) = header("[", "]") {
            table = p.collect();
            table.clone()
        } else if let Some((key, _)) = code.split_once('=')
            && !key.trim().is_empty()
            && key
                .trim()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let mut path = table.clone();
            path.push(Segment::Key(key.trim().into()));
            path
        } else {
            last = None;
            continue;
        };
        last = comment.map(|c| {
            out.push((path, c.to_owned()));
            out.len() - 1
        });
    }
    out
}

/// The JSON pointer of the schema node `path` names: properties by name, a map's values
/// (`roles.www`: any role) by its `additionalProperties`, through `$ref`s and `Option`'s
/// `anyOf`.
fn pointer(schema: &Value, path: &[Segment]) -> Option<String> {
    let mut at = String::new();
    for seg in path {
        let node = resolve(schema, &at)?;
        at = match seg {
            Segment::Key(key) => {
                let resolved = schema.pointer(&node)?;
                if resolved.pointer(&format!("/properties/{key}")).is_some() {
                    format!("{node}/properties/{key}")
                } else if resolved
                    .get("additionalProperties")
                    .is_some_and(Value::is_object)
                {
                    format!("{node}/additionalProperties")
                } else {
                    return None;
                }
            }
            Segment::Items => format!("{node}/items"),
        };
    }
    Some(at)
}

/// The node at `at`, past a `$ref`, an `allOf` of one and an `anyOf`: an `Option`'s `[T, null]` goes to `T`,
/// and a step's `[string, table]` to the table, the alternative that has keys.
fn resolve(schema: &Value, at: &str) -> Option<String> {
    let mut at = at.to_owned();
    for _ in 0..8 {
        let node = schema.pointer(&at)?;
        if let Some(target) = node.get("$ref").and_then(Value::as_str) {
            at = target.strip_prefix('#')?.to_owned();
        } else if node
            .get("allOf")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() == 1)
        {
            // Draft 7 ignores a `$ref`'s siblings: a described reference is `allOf: [ref]`.
            at = format!("{at}/allOf/0");
        } else if let Some(alternatives) = node.get("anyOf").and_then(Value::as_array) {
            let rank = |a: &Value| match (a.get("$ref"), a.get("type").and_then(Value::as_str)) {
                (Some(_), _) => 0,
                (None, Some("object" | "array")) => 1,
                (None, Some("null")) => 3,
                (None, _) => 2,
            };
            let (i, _) = alternatives
                .iter()
                .enumerate()
                .min_by_key(|(_, a)| rank(a))?;
            at = format!("{at}/anyOf/{i}");
        } else {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Definition;
    use std::path::{Path, PathBuf};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Every heet.toml under `examples/`.
    fn examples() -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![repo().join("examples")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.file_name().is_some_and(|n| n == "heet.toml") {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    }

    fn as_json(toml_text: &str) -> Value {
        serde_json::to_value(toml::from_str::<toml::Value>(toml_text).unwrap()).unwrap()
    }

    #[test]
    fn every_example_and_the_reference_are_valid_and_a_wrong_key_is_not() {
        let schema = schema();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let examples = examples();
        assert!(examples.len() >= 4, "{examples:?}");
        for file in &examples {
            let text = std::fs::read_to_string(file).unwrap();
            // heet reads it too: the schema and heet agree on what is a definition.
            Definition::parse(file, &text).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&as_json(&text))
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", file.display());
        }
        // A misspelt key, a count that is text, an unknown table: what heet refuses, the
        // schema refuses.
        for bad in [
            "[project]\nname = \"shop\"\n[roles.www]\ncuont = 2\n",
            "[project]\nname = \"shop\"\n[roles.www]\ncount = \"two\"\n",
            "[project]\nname = \"shop\"\n[environment.staging]\n",
            "[project]\nname = \"shop\"\n[environments.prod]\nassume = \"x\"\n",
        ] {
            assert!(!validator.is_valid(&as_json(bad)), "{bad}");
            assert!(
                Definition::parse(Path::new("heet.toml"), bad).is_err(),
                "{bad}"
            );
        }
    }

    /// Every property of the schema, by its JSON pointer, and whether it has a description.
    fn properties(node: &Value, at: String, out: &mut Vec<(String, bool)>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (key, child) in props {
                let here = format!("{at}/properties/{key}");
                out.push((here.clone(), child.get("description").is_some()));
                properties(child, here, out);
            }
        }
        if let Some(defs) = node.get("definitions").and_then(Value::as_object) {
            for (name, def) in defs {
                properties(def, format!("{at}/definitions/{name}"), out);
            }
        }
    }

    #[test]
    fn every_key_docs_definition_md_describes_is_one_heet_reads() {
        let schema = schema();
        let lost: Vec<String> = described(REFERENCE)
            .into_iter()
            .filter(|(path, _)| pointer(&schema, path).is_none())
            // A plugin's own settings are its to define.
            .filter(|(path, _)| {
                !matches!(&path[..], [Segment::Key(p), Segment::Key(c), _, _, ..] if p == "plugins" && c == "config")
            })
            .map(|(path, text)| format!("{path:?}: {text}"))
            .collect();
        assert!(
            lost.is_empty(),
            "described, but not a key heet reads: {lost:#?}"
        );
    }

    #[test]
    fn every_key_heet_reads_is_described_by_docs_definition_md() {
        let mut all = Vec::new();
        properties(&schema(), String::new(), &mut all);
        assert!(all.len() > 60, "{}", all.len());
        let undescribed: Vec<&str> = all
            .iter()
            .filter(|(_, described)| !described)
            .map(|(at, _)| at.as_str())
            .collect();
        assert!(
            undescribed.is_empty(),
            "keys heet reads that docs/definition.md's examples do not describe (add `key = …  # what it is`): {undescribed:#?}"
        );
    }

    #[test]
    fn the_reference_is_read_key_by_key_with_tables_and_continued_comments() {
        let doc = "x\n```toml\n[project]\nname = \"s\"   # the name\n[roles.www]  # a role\nuser_data = \"#!/bin/sh\"  # at most\n                   # 16 KiB\n# key_pair = \"create\"  # heet makes one\n[[plugins.trust.keys]]  # keys\nscope = \"*\"  # names\n```\nname = 1  # not toml\n";
        let key = |s: &str| Segment::Key(s.into());
        assert_eq!(
            described(doc),
            vec![
                (vec![key("project"), key("name")], "the name".to_owned()),
                (vec![key("roles"), key("www")], "a role".to_owned()),
                (
                    vec![key("roles"), key("www"), key("user_data")],
                    "at most 16 KiB".to_owned()
                ),
                (
                    vec![key("roles"), key("www"), key("key_pair")],
                    "heet makes one".to_owned()
                ),
                (
                    vec![key("plugins"), key("trust"), key("keys")],
                    "keys".to_owned()
                ),
                (
                    vec![
                        key("plugins"),
                        key("trust"),
                        key("keys"),
                        Segment::Items,
                        key("scope")
                    ],
                    "names".to_owned()
                ),
            ]
        );
        let schema = schema();
        let at = pointer(
            &schema,
            &[key("roles"), key("www"), key("rolling"), key("health")],
        )
        .unwrap();
        assert!(
            schema.pointer(&at).unwrap()["description"]
                .as_str()
                .unwrap()
                .contains("status-ok"),
            "{at}"
        );
    }
}
