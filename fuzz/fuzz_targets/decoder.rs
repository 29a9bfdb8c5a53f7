//! Fuzz target for `tower_maas::validate::loads`, the CPython-compatible `json.loads(bytes)`.
//!
//! Properties checked on every input:
//!
//! 1. `loads` never panics (nor overflows: cargo-fuzz builds with debug assertions).
//! 2. A `Syntax` error's position (in characters of the decoded text) is within the input.
//! 3. Whatever `serde_json` accepts, `loads` accepts too, and decodes to the same value.
//!    `serde_json` is stricter than Python's `json` everywhere except (a) nesting depth, where
//!    Python stops near its recursion limit and `loads` at `MAX_DEPTH` (512) — moot here, as
//!    `serde_json::from_slice` already refuses anything nested over 128 — and (b) integers of
//!    over 4300 digits, which Python refuses; `serde_json` (without `arbitrary_precision`) reads
//!    integers past `u64` as `f64`, and one of over 4300 digits overflows that, so it refuses
//!    them as well. `NaN`/`Infinity` literals are never accepted by `serde_json`, so no input it
//!    accepts holds them outside strings. Numbers are compared up to a couple of ULPs:
//!    `serde_json` without its `float_roundtrip` feature may round the last bit differently from
//!    a correctly rounded parser (Rust's `str::parse`, like CPython's `float()`). That feature
//!    is not turned on here because feature unification would change the crate under test.
//! 4. When the input is UTF-8 text (no BOM, no NUL among the first bytes, so `json.loads` reads
//!    it as UTF-8), the same text re-encoded as UTF-16 or UTF-32 (with a BOM, or without one
//!    when the first character is ASCII, so Python's `json.detect_encoding` picks the encoding
//!    from the pattern of zero bytes) decodes to exactly the same result, error positions
//!    included: CPython decodes the bytes to a `str` first, so the encoding cannot matter.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_maas::validate::{DecodeError, Int, Json, loads};

fuzz_target!(|data: &[u8]| {
    let result = loads(data);

    if let Err(DecodeError::Syntax { pos, .. }) = &result {
        assert!(
            *pos <= data.len(),
            "error position {pos} past the end of a {}-byte input",
            data.len()
        );
    }

    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if max_depth(data) < 500 {
            match &result {
                Ok(json) => assert!(
                    same(json, &value),
                    "loads and serde_json disagree:\n  loads: {json:?}\n  serde: {value:?}"
                ),
                Err(err) => panic!("serde_json accepts, loads refuses with {err:?}"),
            }
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let read_as_utf8 = !text.starts_with('\u{feff}') && !data.iter().take(4).any(|&b| b == 0);
        if read_as_utf8 {
            let ascii_first = text.chars().next().is_some_and(|c| c.is_ascii());
            let variant = data.len() % 8;
            // Variants 4..8 rely on zero-byte detection, which needs an ASCII first character.
            let variant = if ascii_first { variant } else { variant % 4 };
            let encoded = encode(text, variant);
            let other = loads(&encoded);
            assert!(
                same_result(&result, &other),
                "UTF-8 and {} disagree:\n  utf-8: {result:?}\n  other: {other:?}",
                VARIANTS[variant]
            );
        }
    }
});

const VARIANTS: [&str; 8] = [
    "UTF-16LE with BOM",
    "UTF-16BE with BOM",
    "UTF-32LE with BOM",
    "UTF-32BE with BOM",
    "UTF-16LE without BOM",
    "UTF-16BE without BOM",
    "UTF-32LE without BOM",
    "UTF-32BE without BOM",
];

fn encode(text: &str, variant: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 4 + 4);
    let (bom, utf32, big_endian) = match variant {
        0 => (true, false, false),
        1 => (true, false, true),
        2 => (true, true, false),
        3 => (true, true, true),
        4 => (false, false, false),
        5 => (false, false, true),
        6 => (false, true, false),
        _ => (false, true, true),
    };
    let unit16 = |out: &mut Vec<u8>, u: u16| {
        out.extend_from_slice(&if big_endian { u.to_be_bytes() } else { u.to_le_bytes() });
    };
    if utf32 {
        let mut push = |c: u32| {
            out.extend_from_slice(&if big_endian { c.to_be_bytes() } else { c.to_le_bytes() });
        };
        if bom {
            push(0xfeff);
        }
        text.chars().for_each(|c| push(c as u32));
    } else {
        if bom {
            unit16(&mut out, 0xfeff);
        }
        for u in text.encode_utf16() {
            unit16(&mut out, u);
        }
    }
    out
}

/// Exact equality of two decoder results, with `NaN` equal to itself.
fn same_result(a: &Result<Json, DecodeError>, b: &Result<Json, DecodeError>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => identical(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

fn identical(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Float(x), Json::Float(y)) => x.to_bits() == y.to_bits(),
        (Json::List(xs), Json::List(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| identical(x, y))
        }
        (Json::Dict(xs), Json::Dict(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .zip(ys.iter())
                    .all(|((kx, x), (ky, y))| kx == ky && identical(x, y))
        }
        _ => a == b,
    }
}

/// Whether `json` (Python semantics) holds the same value as `value` (`serde_json`).
fn same(json: &Json, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (json, value) {
        (Json::Null, Value::Null) => true,
        (Json::Bool(a), Value::Bool(b)) => a == b,
        (Json::Str(a), Value::String(b)) => **a == **b,
        (Json::List(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        // A repeated key: both keep the last value (Python keeps the first position; the serde
        // map is sorted, so only membership is compared).
        (Json::Dict(xs), Value::Object(ys)) => {
            xs.len() == ys.len() && xs.iter().all(|(k, x)| ys.get(k).is_some_and(|y| same(x, y)))
        }
        (Json::Int(Int::Small(a)), Value::Number(n)) => {
            // `-0` is an int 0 for Python, a float -0.0 for serde_json.
            n.as_i64() == Some(*a) || (n.is_f64() && n.as_f64() == Some(*a as f64))
        }
        (Json::Int(Int::Big(digits)), Value::Number(n)) => match n.as_u64() {
            Some(u) => **digits == *u.to_string(),
            None => n.is_f64() && close(digits.parse().unwrap_or(f64::NAN), n.as_f64().unwrap()),
        },
        (Json::Float(x), Value::Number(n)) => n.as_f64().is_some_and(|y| close(*x, y)),
        _ => false,
    }
}

/// Equal up to 2 ULPs (both finite: serde_json refuses what overflows).
fn close(x: f64, y: f64) -> bool {
    if x == y {
        return true;
    }
    if !x.is_finite() || !y.is_finite() || x.is_sign_negative() != y.is_sign_negative() {
        return false;
    }
    x.to_bits().abs_diff(y.to_bits()) <= 2
}

/// Deepest nesting of `[`/`{` outside strings.
fn max_depth(data: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in data {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
