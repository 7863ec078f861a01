//! Text from outside heet as people see it: what plugins say (violations, configure errors,
//! panic and trap messages, log lines) and names read back from AWS. The one place that
//! decides how such text reaches a terminal, so that no plugin can rewrite what heet shows.
//!
//! Control characters (C0, DEL, C1: ESC, CR, BEL, …), bidi overrides and isolates
//! (U+202A–U+202E, U+2066–U+2069, U+061C) and zero-width and invisible characters (U+200B–U+200F,
//! U+2028, U+2029, U+2060–U+2064, U+FEFF) are shown escaped, `\x1b` or `\u{202e}`; each string
//! is cut after [`MAX_CHARS`] characters with a marker saying how much was cut.

use std::fmt;

/// The most characters of one outside string heet prints.
pub const MAX_CHARS: usize = 1000;
/// The most guard violations heet prints; then "and N more".
pub const MAX_VIOLATIONS: usize = 50;

/// `text` as heet prints it (see the module doc); `Display` does the work, so nothing is
/// copied until it is written.
pub fn shown(text: &str) -> Shown<'_> {
    Shown(text)
}

/// `secs` since the epoch as RFC 3339 in UTC (`2026-12-07T01:56:10Z`: sorts by time), as
/// heet writes times in tags and messages; the number itself if it is out of range.
pub fn rfc3339(secs: i64) -> String {
    aws_smithy_types::DateTime::from_secs(secs)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| secs.to_string())
}

/// Each of `items` [`shown`], joined by ", ".
pub fn shown_all(items: &[String]) -> String {
    let shown: Vec<String> = items.iter().map(|i| shown(i).to_string()).collect();
    shown.join(", ")
}

#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a str);

/// Whether `c` is shown escaped rather than as itself.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.char_indices();
        for (_, c) in chars.by_ref().take(MAX_CHARS) {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if is_hidden(c) && (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c if is_hidden(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        if let Some((at, _)) = chars.next() {
            write!(f, "… [{} more bytes cut]", self.0.len() - at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_control_is_shown_escaped_and_the_words_stay_readable() {
        let hostile = "\x1b[2K\r\x1b[32mno changes\x1b[0m \x1b]8;;https://x.example/\x07link\x1b]8;;\x07 \u{202e}txt.exe\u{202c} a\u{200b}b \u{9b}31m";
        let out = shown(hostile).to_string();
        assert_eq!(
            out,
            "\\x1b[2K\\r\\x1b[32mno changes\\x1b[0m \\x1b]8;;https://x.example/\\x07link\\x1b]8;;\\x07 \\u{202e}txt.exe\\u{202c} a\\u{200b}b \\u{9b}31m"
        );
        assert!(!out.chars().any(is_hidden));
        assert_eq!(
            shown("plain, ünïcode ✓ and \\x1b typed").to_string(),
            "plain, ünïcode ✓ and \\x1b typed"
        );
        assert_eq!(
            shown("two\nlines\tand tab").to_string(),
            "two\\nlines\\tand tab"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_marker_saying_how_much() {
        let long = "é".repeat(MAX_CHARS + 10);
        let out = shown(&long).to_string();
        assert!(out.starts_with(&"é".repeat(MAX_CHARS)));
        assert!(out.ends_with("… [20 more bytes cut]"), "{out}");
        assert_eq!(
            shown(&long[..MAX_CHARS * 2]).to_string().chars().count(),
            MAX_CHARS
        );
    }
}
