//! What the management API accepts in its string parameters: the endpoint-name rule (6274) and
//! the security check (6298).

/// Whether `name` is a valid endpoint name: 1 to 64 characters, starting with an ASCII letter,
/// then ASCII letters, digits, `.`, `_` and `-` (ModelArts.6274 otherwise).
///
/// ```
/// use tower_maas::endpoint::is_valid_name;
///
/// assert!(is_valid_name("team-a.chat_v2"));
/// assert!(!is_valid_name("2fast"));
/// assert!(!is_valid_name(""));
/// assert!(!is_valid_name(&"a".repeat(65)));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Characters the security check refuses in any string parameter (ModelArts.6298), besides
/// control characters: markup (`<` `>`), quotes (`"` `'` `` ` ``), and the metacharacters of
/// shells, scripts and SQL that turn text into code (`;` `&` `|` `$` `\`).
pub const REFUSED_CHARACTERS: &str = "<>\"'`;&|$\\";

/// Whether `value` passes the security check of the management API (ModelArts.6298 otherwise).
///
/// Refused: the characters of [`REFUSED_CHARACTERS`]; control characters (Unicode `Cc`: C0,
/// DEL, C1); line and paragraph separators (U+2028, U+2029); and the bidirectional controls
/// that make text read differently from how it is stored (U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069). Everything else, letters of any script, spaces, `%`, parentheses, passes:
/// a remark such as `50% of team A (beta)` is fine.
///
/// ```
/// use tower_maas::endpoint::passes_security_check;
///
/// assert!(passes_security_check("50% of team A (beta), 北京"));
/// assert!(!passes_security_check("<script>"));
/// assert!(!passes_security_check("a'; DROP TABLE endpoints; --"));
/// assert!(!passes_security_check("line\nbreak"));
/// assert!(!passes_security_check("evil\u{202e}txt.exe"));
/// ```
pub fn passes_security_check(value: &str) -> bool {
    !value.chars().any(|c| {
        REFUSED_CHARACTERS.contains(c)
            || c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rule() {
        for good in ["a", "A", "a1", "a.b_c-d", &"x".repeat(64)] {
            assert!(is_valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            "1a",
            "_a",
            "-a",
            ".a",
            "a b",
            "a/b",
            "é",
            "aé",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_security_check_refuses_each_documented_character() {
        for c in REFUSED_CHARACTERS.chars().chain([
            '\0', '\t', '\r', '\u{7f}', '\u{85}', '\u{9f}', '\u{2028}', '\u{2029}', '\u{200e}',
            '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
        ]) {
            assert!(!passes_security_check(&format!("ok{c}ok")), "{c:?}");
        }
        for c in [
            ' ', '%', '(', ')', '/', ':', ',', '.', '-', '+', '=', '@', '#', '中',
        ] {
            assert!(passes_security_check(&format!("ok{c}ok")), "{c:?}");
        }
    }
}
