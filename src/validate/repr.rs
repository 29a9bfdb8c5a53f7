//! Python's `repr()` of decoded JSON values, as `str()` of a pydantic error list writes them.

use std::fmt::Write as _;

use super::json::{Dict, Json};
use super::printable::NOT_PRINTABLE;

/// Appends `repr(value)`.
pub(crate) fn json(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("None"),
        Json::Bool(true) => out.push_str("True"),
        Json::Bool(false) => out.push_str("False"),
        Json::Int(int) => {
            let _ = write!(out, "{int}");
        }
        Json::Float(x) => float(out, *x),
        Json::Str(s) => string(out, s),
        Json::WideStr(wide) => quoted(out, wide.code_points().iter().copied()),
        Json::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                json(out, item);
            }
            out.push(']');
        }
        Json::Dict(dict) => self::dict(out, dict),
    }
}

pub(crate) fn dict(out: &mut String, dict: &Dict) {
    out.push('{');
    for (i, (key, value)) in dict.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        string(out, key);
        out.push_str(": ");
        json(out, value);
    }
    out.push('}');
}

/// `repr(float)`: the shortest digits that round-trip, in fixed notation when the decimal
/// point falls within 16 digits and not below 1e-4, else with a signed two-digit exponent.
pub(crate) fn float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` gives the shortest round-trip digits, as Python's repr does.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1;
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-decpt) as usize));
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if decpt < digits.len() {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        } else {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', decpt - digits.len()));
            out.push_str(".0");
        }
    }
}

/// `repr(str)`: single quotes unless the text has a `'` and no `"`; backslash escapes for the
/// quote, `\`, `\t`, `\n`, `\r`; `\xNN`/`\uNNNN`/`\UNNNNNNNN` for what is not printable.
pub(crate) fn string(out: &mut String, s: &str) {
    quoted(out, s.chars().map(u32::from));
}

/// `repr` of a string given as code points (lone surrogates included).
fn quoted(out: &mut String, code_points: impl Iterator<Item = u32> + Clone) {
    let has = |c: char| code_points.clone().any(|p| p == c as u32);
    let quote = if has('\'') && !has('"') { '"' } else { '\'' };
    out.push(quote);
    for c in code_points {
        match char::from_u32(c) {
            Some('\\') => out.push_str("\\\\"),
            Some('\t') => out.push_str("\\t"),
            Some('\n') => out.push_str("\\n"),
            Some('\r') => out.push_str("\\r"),
            Some(ch) if ch == quote => {
                out.push('\\');
                out.push(ch);
            }
            Some(ch) if c < 0x20 || c == 0x7f => {
                let _ = write!(out, "\\x{:02x}", u32::from(ch));
            }
            Some(ch) if ch.is_ascii() || is_printable(ch) => out.push(ch),
            // Not printable, or a lone surrogate.
            _ if c <= 0xff => {
                let _ = write!(out, "\\x{c:02x}");
            }
            _ if c <= 0xffff => {
                let _ = write!(out, "\\u{c:04x}");
            }
            _ => {
                let _ = write!(out, "\\U{c:08x}");
            }
        }
    }
    out.push(quote);
}

/// `repr(bytes)`: `b'…'`, printable ASCII as is, the rest as `\xNN`.
pub(crate) fn bytes(out: &mut String, b: &[u8]) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(quote as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..0x7f => out.push(c as char),
            c => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(quote as char);
}

fn is_printable(c: char) -> bool {
    let c = c as u32;
    NOT_PRINTABLE
        .binary_search_by(|&(start, end)| {
            if end < c {
                std::cmp::Ordering::Less
            } else if start > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut out = String::new();
        float(&mut out, x);
        out
    }

    fn s(text: &str) -> String {
        let mut out = String::new();
        string(&mut out, text);
        out
    }

    #[test]
    fn floats_as_python() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.5e300, "1.5e+300"),
            (2.5, "2.5"),
            (-2.0, "-2.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.30000000000000004, "0.30000000000000004"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (x, expected) in cases {
            assert_eq!(f(x), expected, "{x:e}");
        }
    }

    #[test]
    fn strings_as_python() {
        assert_eq!(s("abc"), "'abc'");
        assert_eq!(s("it's"), "\"it's\"");
        assert_eq!(s("say \"hi\""), "'say \"hi\"'");
        assert_eq!(s("it's \"x\""), "'it\\'s \"x\"'");
        assert_eq!(s("a\\b\n\t\r"), "'a\\\\b\\n\\t\\r'");
        assert_eq!(s("\u{1}\u{7f}"), "'\\x01\\x7f'");
        assert_eq!(s("é模型🙂"), "'é模型🙂'");
        assert_eq!(
            s("\u{a0}\u{ad}\u{2028}\u{e000}\u{f0000}"),
            "'\\xa0\\xad\\u2028\\ue000\\U000f0000'"
        );
    }

    #[test]
    fn bytes_as_python() {
        let mut out = String::new();
        bytes(&mut out, b"{'a': 1}\n\xff");
        assert_eq!(out, "b\"{'a': 1}\\n\\xff\"");
    }
}
