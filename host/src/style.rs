//! Colour on a terminal, never off one or with `NO_COLOR` (no-color.org): a plan's lines by
//! what they do, as Terraform shows them (`+` green, `~` and `±` yellow, `-` red).

use std::io::IsTerminal;

use anstyle::{AnsiColor, Style};

/// Whether `NO_COLOR` asks for none: set and not empty.
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Whether stdout shows colour.
pub fn stdout_color() -> bool {
    std::io::stdout().is_terminal() && !no_color()
}

/// Whether stderr shows colour.
pub fn stderr_color() -> bool {
    std::io::stderr().is_terminal() && !no_color()
}

/// `text` with each change line coloured by its marker (the first word after the indent):
/// unchanged when `color` is off.
pub fn changes(text: &str, color: bool) -> String {
    if !color {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let marker = line.trim_start().split(' ').next().unwrap_or("");
        let style = match marker {
            "+" => Some(AnsiColor::Green),
            "~" | "±" => Some(AnsiColor::Yellow),
            "-" => Some(AnsiColor::Red),
            _ => None,
        }
        .map(|c| Style::new().fg_color(Some(c.into())));
        match style {
            Some(s) => out.push_str(&format!("{s}{line}{s:#}")),
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_line_takes_its_markers_colour_and_nothing_else_does() {
        let plan = "plan for shop/staging: 1 to create\n  + create   www[1]\n  ~ retag    www[2]\n  ± replace  db[1]\n  - delete   old[1]\n  conflict: x - y";
        assert_eq!(changes(plan, false), plan);
        let shown = changes(plan, true);
        let lines: Vec<&str> = shown.split('\n').collect();
        assert_eq!(lines[0], "plan for shop/staging: 1 to create");
        assert_eq!(lines[1], "\u{1b}[32m  + create   www[1]\u{1b}[0m");
        assert_eq!(lines[2], "\u{1b}[33m  ~ retag    www[2]\u{1b}[0m");
        assert_eq!(lines[3], "\u{1b}[33m  ± replace  db[1]\u{1b}[0m");
        assert_eq!(lines[4], "\u{1b}[31m  - delete   old[1]\u{1b}[0m");
        assert_eq!(lines[5], "  conflict: x - y");
    }
}
