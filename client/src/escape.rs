//! Printing text that comes from the server.
//!
//! A file name or error message chosen by the server could hold escape
//! sequences that move the cursor, rewrite earlier lines or change the
//! terminal's title. Everything the server says is printed through
//! [`Escaped`], which replaces such characters with visible escapes.

use std::fmt::{self, Write as _};

/// Displays a string with the characters that could drive a terminal or
/// disguise text written as visible escapes.
///
/// Control characters (C0, DEL, C1) become `\t`, `\n`, `\r` or `\u{..}`;
/// Unicode format characters (the invisible ones that steer how the text
/// around them is shown: bidirectional controls, zero-width spaces and
/// joiners, tags...) and line/paragraph separators become `\u{..}`; a
/// backslash is doubled so that an escape in the output always means an
/// escaped character. Everything else, including non-ASCII letters, is
/// printed as is.
///
/// ```
/// use framekit_client::escape::Escaped;
///
/// assert_eq!(Escaped("日本/ファイル.txt").to_string(), "日本/ファイル.txt");
/// assert_eq!(Escaped("a\u{1b}[2J\tb").to_string(), "a\\u{1b}[2J\\tb");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            let (plain, tail) = rest.split_at(at);
            f.write_str(plain)?;
            let mut chars = tail.chars();
            if let Some(c) = chars.next() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\t' => f.write_str("\\t")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    c => {
                        for e in c.escape_unicode() {
                            f.write_char(e)?;
                        }
                    }
                }
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `c` is a Unicode format character (general category Cf, as of
/// Unicode 15): invisible, it changes how the text around it is shown.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{890}'..='\u{891}'
            | '\u{8e2}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{110bd}'
            | '\u{110cd}'
            | '\u{13430}'..='\u{1343f}'
            | '\u{1bca0}'..='\u{1bca3}'
            | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0001}'
            | '\u{e0020}'..='\u{e007f}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn plain_and_unicode_text_is_unchanged() {
        for s in [
            "",
            "a",
            "file with spaces.txt",
            "日本語/ファイル.txt",
            "émoji 🦀",
        ] {
            assert_eq!(escaped(s), s);
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escaped("a\u{1b}]0;title\u{7}b"), "a\\u{1b}]0;title\\u{7}b");
        assert_eq!(
            escaped("\0\u{7f}\u{85}\u{9b}"),
            "\\u{0}\\u{7f}\\u{85}\\u{9b}"
        );
        assert_eq!(escaped("one\ntwo\r\tthree"), "one\\ntwo\\r\\tthree");
    }

    #[test]
    fn bidi_controls_and_separators_are_escaped() {
        assert_eq!(escaped("abc\u{202e}txt.exe"), "abc\\u{202e}txt.exe");
        assert_eq!(escaped("a\u{2066}b\u{2028}c"), "a\\u{2066}b\\u{2028}c");
    }

    #[test]
    fn invisible_format_characters_are_escaped() {
        assert_eq!(escaped("a\u{200b}b"), "a\\u{200b}b");
        assert_eq!(escaped("zero\u{200d}width"), "zero\\u{200d}width");
        assert_eq!(escaped("\u{feff}bom"), "\\u{feff}bom");
        assert_eq!(escaped("soft\u{ad}hyphen"), "soft\\u{ad}hyphen");
        assert_eq!(escaped("tag\u{e0041}\u{e007f}"), "tag\\u{e0041}\\u{e007f}");
        for isolate in '\u{2066}'..='\u{2069}' {
            assert_eq!(
                escaped(&isolate.to_string()),
                format!("\\u{{{:x}}}", isolate as u32)
            );
        }
        // Letters and marks that show are left alone, emoji selectors too.
        assert_eq!(
            escaped("e\u{301} \u{2764}\u{fe0f}"),
            "e\u{301} \u{2764}\u{fe0f}"
        );
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_are_unambiguous() {
        assert_eq!(escaped("a\\u{1b}"), "a\\\\u{1b}");
        assert_ne!(escaped("a\\u{1b}"), escaped("a\u{1b}"));
    }

    #[test]
    fn no_control_character_survives() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = escaped(&all);
        assert!(!out.chars().any(|c| c != '\\' && needs_escape(c)));
        assert!(!out.chars().any(char::is_control));
    }
}
