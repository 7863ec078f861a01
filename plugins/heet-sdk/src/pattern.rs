//! Name patterns such as `{env}-{role}-{index:02}`, shared by the plugins that derive names
//! (Name tags, CNAMEs) from an instance's place in the definition.
//!
//! Placeholders: `{project}`, `{env}`, `{role}`, `{index}`, `{count}`, `{region}`; numbers
//! take a zero-padded width as in `{index:02}`.

use crate::InstanceContext;

/// A parsed pattern: literal text and placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field { name: Field, width: usize },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Project,
    Env,
    Role,
    Index,
    Count,
    Region,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, String> {
        let mut pieces = Vec::new();
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("pattern {pattern:?}: unclosed '{{'"))?
                + open;
            let spec = &rest[open + 1..close];
            let (name, width) = match spec.split_once(':') {
                Some((name, width)) => {
                    let width = width.parse::<usize>().map_err(|_| {
                        format!("pattern {pattern:?}: width {width:?} is not a number")
                    })?;
                    (name, width)
                }
                None => (spec, 0),
            };
            let name = match name {
                "project" => Field::Project,
                "env" => Field::Env,
                "role" => Field::Role,
                "index" => Field::Index,
                "count" => Field::Count,
                "region" => Field::Region,
                other => {
                    return Err(format!(
                        "pattern {pattern:?}: unknown placeholder {{{other}}}"
                    ));
                }
            };
            if width > 0 && !matches!(name, Field::Index | Field::Count) {
                return Err(format!("pattern {pattern:?}: only numbers take a width"));
            }
            pieces.push(Piece::Field { name, width });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("pattern {pattern:?}: unmatched '}}'"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Pattern(pieces))
    }

    pub fn render(&self, ctx: &InstanceContext) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field { name, width } => match name {
                    Field::Project => out.push_str(&ctx.project),
                    Field::Env => out.push_str(&ctx.env),
                    Field::Role => out.push_str(&ctx.role),
                    Field::Region => out.push_str(&ctx.region),
                    Field::Index => out.push_str(&format!("{:0width$}", ctx.index)),
                    Field::Count => out.push_str(&format!("{:0width$}", ctx.count)),
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    const DEFAULT_PATTERN: &str = "{env}-{role}-{index:02}";

    #[test]
    fn default_pattern_pads_the_index() {
        let mut ctx = testing::instance("shop", "production", "www");
        ctx.index = 7;
        let p = Pattern::parse(DEFAULT_PATTERN).unwrap();
        assert_eq!(p.render(&ctx), "production-www-07");
    }

    #[test]
    fn awsheet_style_pattern() {
        let mut ctx = testing::instance("shop", "production", "www");
        ctx.index = 8;
        ctx.count = 25;
        let p = Pattern::parse("{env}-{role}-{index}-{count}").unwrap();
        assert_eq!(p.render(&ctx), "production-www-8-25");
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_reason() {
        assert!(Pattern::parse("{env").unwrap_err().contains("unclosed"));
        assert!(
            Pattern::parse("{nope}")
                .unwrap_err()
                .contains("unknown placeholder {nope}")
        );
        assert!(
            Pattern::parse("{role:03}")
                .unwrap_err()
                .contains("only numbers")
        );
        assert!(
            Pattern::parse("{index:xx}")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(Pattern::parse("a}b").unwrap_err().contains("unmatched"));
    }
}
