//! How a definition error is shown below its first line, as cargo and rustc show theirs: the
//! source line with a caret under what is wrong, labelled with its key path
//! (`roles.www.count`), and a help line where heet knows the fix. The first line stays
//! `file:line:col: message`, so editors and CI still jump to it.

use std::ops::Range;
use std::path::Path;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::definition::DefinitionError;

/// A definition file larger than this is not read again to show a line of it.
const MAX_SOURCE: u64 = 1 << 20;

/// What is shown below `err`'s first line, when it has a place in a file heet can read
/// again; `color` on a terminal that wants it.
pub fn snippet(err: &DefinitionError, color: bool) -> Option<String> {
    let (line, col) = err.at?;
    let source = read_small(&err.file)?;
    Some(render(&source, line, col, &err.message, color))
}

fn read_small(file: &Path) -> Option<String> {
    let size = std::fs::metadata(file).ok()?.len();
    (size <= MAX_SOURCE)
        .then(|| std::fs::read_to_string(file).ok())
        .flatten()
}

/// The snippet of `source` at 1-based `line`:`col` for an error saying `message`.
pub fn render(source: &str, line: usize, col: usize, message: &str, color: bool) -> String {
    let Some(offset) = offset_of(source, line, col) else {
        return String::new();
    };
    let (path, span) = locate(source, offset);
    let span = span.unwrap_or_else(|| token(source, offset));
    let key = (!path.is_empty()).then(|| key_path(&path));
    let mut annotation = AnnotationKind::Primary.span(span);
    if let Some(k) = &key {
        annotation = annotation.label(k.as_str());
    }
    let mut group = Group::with_level(Level::ERROR).element(
        Snippet::source(source)
            .line_start(1)
            .fold(true)
            .annotation(annotation),
    );
    let help = help(message, path.last().map(String::as_str));
    if let Some(h) = &help {
        group = group.element(Level::HELP.message(h.as_str()));
    }
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut out = renderer.render(&[group]);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `path` as written in heet's messages: `roles.db.allow_from[0]`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

/// The byte offset of 1-based `line`:`col` (`col` counts characters), if the source has it.
fn offset_of(source: &str, line: usize, col: usize) -> Option<usize> {
    let start: usize = source
        .split_inclusive('\n')
        .take(line.checked_sub(1)?)
        .map(str::len)
        .sum();
    let text = source.get(start..)?.lines().next().unwrap_or("");
    let within = text
        .char_indices()
        .nth(col.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i);
    Some(start + within)
}

/// The key path of what sits at `offset` in the TOML `source` (table headers, keys, array
/// indexes as `[n]`), and the span of the key or value that starts there, when the source
/// parses (a syntax error has neither).
fn locate(source: &str, offset: usize) -> (Vec<String>, Option<Range<usize>>) {
    let Ok(doc) = toml_edit::Document::parse(source) else {
        return (Vec::new(), None);
    };
    let mut path = Vec::new();
    let mut span = None;
    walk_table(doc.as_table(), offset, &mut path, &mut span);
    (path, span)
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref().is_some_and(|s| s.contains(&offset))
}

/// Descends into the entry of `table` that holds `offset`: a standard table's entries hold
/// no span of their own, so each is searched.
fn walk_table(
    table: &dyn toml_edit::TableLike,
    offset: usize,
    path: &mut Vec<String>,
    span: &mut Option<Range<usize>>,
) -> bool {
    for (key, item) in table.iter() {
        let key_span = table.key(key).and_then(toml_edit::Key::span);
        path.push(key.to_owned());
        if contains(&key_span, offset) {
            *span = key_span;
            return true;
        }
        if walk_item(item, offset, path, span) {
            return true;
        }
        path.pop();
    }
    false
}

fn walk_item(
    item: &toml_edit::Item,
    offset: usize,
    path: &mut Vec<String>,
    span: &mut Option<Range<usize>>,
) -> bool {
    match item {
        toml_edit::Item::Table(t) => walk_table(t, offset, path, span),
        toml_edit::Item::ArrayOfTables(tables) => {
            for (i, t) in tables.iter().enumerate() {
                path.push(format!("[{i}]"));
                if walk_table(t, offset, path, span) {
                    return true;
                }
                path.pop();
            }
            false
        }
        toml_edit::Item::Value(v) => walk_value(v, offset, path, span),
        toml_edit::Item::None => false,
    }
}

fn walk_value(
    value: &toml_edit::Value,
    offset: usize,
    path: &mut Vec<String>,
    span: &mut Option<Range<usize>>,
) -> bool {
    let own = value.span();
    if !contains(&own, offset) {
        return false;
    }
    let inner = match value {
        toml_edit::Value::InlineTable(t) => walk_table(t, offset, path, span),
        toml_edit::Value::Array(a) => a.iter().enumerate().any(|(i, v)| {
            path.push(format!("[{i}]"));
            let found = walk_value(v, offset, path, span);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    };
    if !inner {
        *span = own;
    }
    true
}

/// The token at `offset` when the source does not parse: a quoted string to its closing
/// quote, else up to the next space or delimiter; at least one character, unless the line
/// ends there (a caret after its last character).
fn token(source: &str, offset: usize) -> Range<usize> {
    let rest = &source[offset..];
    let line = rest.lines().next().unwrap_or("");
    let len = match line.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let mut escaped = false;
            line.char_indices()
                .skip(1)
                .find(|&(_, c)| {
                    let end = c == q && !escaped;
                    escaped = q == '"' && c == '\\' && !escaped;
                    end
                })
                .map_or(line.len(), |(i, c)| i + c.len_utf8())
        }
        Some(_) => line
            .find(|c: char| c.is_whitespace() || ",]}=".contains(c))
            .unwrap_or(line.len()),
        None => 0,
    };
    if line.is_empty() {
        return offset..offset;
    }
    offset..offset + len.max(1)
}

/// What to write instead, where the message says enough: the closest of the names it lists,
/// or an example of the type it expects.
fn help(message: &str, key: Option<&str>) -> Option<String> {
    if let Some(suggestion) = closest_listed(message) {
        return Some(format!("did you mean `{suggestion}`?"));
    }
    let expected = message.split("expected ").nth(1)?;
    let key = key.filter(|k| !k.starts_with('[')).unwrap_or("key");
    let example = match expected.trim_end_matches('.') {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" | "an integer" | "a number" => {
            format!("expected a number, e.g. `{key} = 2`")
        }
        "f32" | "f64" | "a float" => format!("expected a number, e.g. `{key} = 0.5`"),
        "a boolean" => format!("expected true or false, e.g. `{key} = true`"),
        "a string" => format!("expected a string in quotes, e.g. `{key} = \"...\"`"),
        "a sequence" => format!("expected a list, e.g. `{key} = [\"...\"]`"),
        "a map" | "struct" => format!("expected a table, e.g. `[...{key}]` or `{key} = {{ ... }}`"),
        _ => return None,
    };
    Some(example)
}

/// The closest known name to the one refused, when the message lists the known ones: serde's
/// ``unknown field `x`, expected one of `a`, `b` ``, or heet's `"x" is not a ...; they are a,
/// b`. None when nothing listed is close.
fn closest_listed(message: &str) -> Option<&str> {
    let (given, known): (&str, Vec<&str>) =
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (given, rest) = rest.split_once('`')?;
            let known = rest.split('`').skip(1).step_by(2).collect();
            (given, known)
        } else if let Some((head, list)) = message.split_once("; they are ") {
            let given = head.split('"').nth(1)?;
            (given, list.split(", ").map(str::trim).collect())
        } else {
            return None;
        };
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(given, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEF: &str =
        "[project]\nname = \"shop\"\n\n[roles.www]\ncount = \"two\"\nports = [80, \"x\"]\n";

    #[test]
    fn the_line_the_caret_under_the_value_and_its_key_path() {
        let shown = render(
            DEF,
            5,
            9,
            "invalid type: string \"two\", expected u32",
            false,
        );
        assert_eq!(
            shown,
            "  |\n5 | count = \"two\"\n  |         ^^^^^ roles.www.count\n  |\n  = help: expected a number, e.g. `count = 2`\n",
            "{shown}"
        );
    }

    #[test]
    fn an_array_element_is_named_by_its_index() {
        let (path, span) = locate(DEF, DEF.find("\"x\"").unwrap());
        assert_eq!(key_path(&path), "roles.www.ports[1]");
        assert_eq!(span.map(|s| &DEF[s]), Some("\"x\""));
    }

    #[test]
    fn an_unknown_key_gets_the_closest_known_one_and_no_guess_when_none_is_close() {
        assert_eq!(
            help(
                "unknown field `max_surge`, expected one of `batch`, `max_unavailable`, `health`",
                Some("max_surge")
            ),
            None
        );
        assert_eq!(
            help(
                "unknown field `instance_typ`, expected one of `count`, `instance_type`, `ami`",
                Some("instance_typ")
            )
            .as_deref(),
            Some("did you mean `instance_type`?")
        );
        assert_eq!(
            help(
                "roles.www.replace_on: \"userdata\" is not a launch setting; they are ami, instance_type, user_data",
                None
            )
            .as_deref(),
            Some("did you mean `user_data`?")
        );
    }

    #[test]
    fn a_file_that_does_not_parse_still_gets_its_line_and_the_token() {
        let broken = "[project]\nname = \"shop\nx = 1\n";
        assert_eq!(token(broken, broken.find('"').unwrap()), 17..22);
        let shown = render(broken, 2, 8, "invalid basic string", false);
        assert!(shown.contains("2 | name = \"shop\n"), "{shown}");
        assert!(shown.contains("^^^^^"), "{shown}");
        // An error at the end of a line gets one caret after it, on that line only.
        let unclosed = "[roles.www\ncount = 1\n";
        assert_eq!(token(unclosed, 10), 10..10);
        let shown = render(unclosed, 1, 11, "unclosed table, expected `]`", false);
        assert_eq!(shown, "  |\n1 | [roles.www\n  |           ^\n", "{shown}");
    }
}
