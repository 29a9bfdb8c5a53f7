//! A JSON decoder that fails exactly as CPython 3.11/3.12's `json.loads(bytes)` does.
//!
//! FastAPI parses a body with `json.loads`; when that fails, the error the client sees carries
//! Python's message and its position counted in characters of the decoded text. This decoder
//! follows CPython's C scanner (`Modules/_json.c`) step by step, so every error class comes out
//! with the same message and the same position:
//!
//! `Expecting value`, `Expecting property name enclosed in double quotes`, `Expecting ':'
//! delimiter`, `Expecting ',' delimiter`, `Unterminated string starting at`, `Invalid control
//! character at`, `Invalid \escape`, `Invalid \uXXXX escape`, `Extra data`.
//!
//! CPython 3.13 added messages for trailing commas; this follows 3.11/3.12.
//!
//! What Python accepts, this accepts: `NaN`, `Infinity`, `-Infinity`, integers of any size (up
//! to Python's 4300-digit conversion limit), duplicate keys (the last value wins, the first
//! position is kept). Bytes are decoded as `json.loads` decodes them: UTF-8, UTF-8 with a BOM,
//! UTF-16 and UTF-32 (by BOM or by the pattern of zero bytes).

use crate::json_text::find_special;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A decoded JSON value, as Python's `json` module would build it.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null` → `None`
    Null,
    /// `true`/`false`
    Bool(bool),
    /// An integer literal (no fraction, no exponent).
    Int(Int),
    /// A number with a fraction or exponent, or `NaN`/`Infinity`/`-Infinity`.
    Float(f64),
    /// A string.
    Str(Box<str>),
    /// A string holding lone surrogates (`"\ud800"`), which Python keeps and Rust's `str`
    /// cannot.
    WideStr(Box<WideStr>),
    /// An array.
    List(Vec<Json>),
    /// An object: keys unique, in the order of their first appearance.
    Dict(Dict),
}

impl Json {
    /// The text of a string value (lone surrogates as U+FFFD); `None` for other values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            Self::WideStr(wide) => Some(wide.lossy()),
            _ => None,
        }
    }
}

/// A string with lone surrogates: its code points, and the text with U+FFFD in their place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WideStr {
    lossy: Box<str>,
    code_points: Box<[u32]>,
}

impl WideStr {
    /// The text with each lone surrogate replaced by U+FFFD.
    pub fn lossy(&self) -> &str {
        &self.lossy
    }

    /// The code points, surrogates included.
    pub fn code_points(&self) -> &[u32] {
        &self.code_points
    }
}

/// A Python `int`: machine-sized when it fits, else its canonical decimal digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Int {
    /// Fits in an `i64`.
    Small(i64),
    /// Does not: canonical decimal (optional `-`, no leading zeros).
    Big(Box<str>),
}

impl Int {
    /// The value as `i64`, when it fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Small(v) => Some(*v),
            Self::Big(_) => None,
        }
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        match self {
            Self::Small(v) => *v < 0,
            Self::Big(digits) => digits.starts_with('-'),
        }
    }

    /// The value as the nearest `f64`, as Python's `float(int)` (huge values become ±inf).
    pub fn to_f64(&self) -> f64 {
        match self {
            Self::Small(v) => *v as f64,
            Self::Big(digits) => digits.parse().unwrap_or(f64::NAN),
        }
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Small(v) => write!(f, "{v}"),
            Self::Big(digits) => f.write_str(digits),
        }
    }
}

/// A JSON object: entries in the order their keys first appeared; a repeated key replaced the
/// value in place, as a Python `dict` does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dict {
    entries: Vec<(Key, Json)>,
}

/// An object key: the field names OpenAI bodies repeat in every request are borrowed from a
/// table, which spares an allocation and a free per key. (Interning string values the same way
/// was measured and lost: most values are long texts or names outside any table.)
type Key = Cow<'static, str>;

/// The common OpenAI field names, grouped by length so a miss costs one comparison of lengths.
fn known_key(key: &str) -> Option<&'static str> {
    let candidates: &[&'static str] = match key.len() {
        1 => &["n"],
        2 => &["id"],
        3 => &["url"],
        4 => &[
            "echo", "name", "role", "seed", "stop", "text", "type", "user",
        ],
        5 => &["input", "min_p", "model", "tools", "top_k", "top_p"],
        6 => &["detail", "prompt", "stream", "suffix"],
        7 => &["best_of", "content"],
        8 => &["function", "logprobs", "messages", "required"],
        9 => &["arguments", "image_url", "video_url"],
        10 => &[
            "dimensions",
            "logit_bias",
            "max_tokens",
            "parameters",
            "properties",
            "tool_calls",
        ],
        11 => &["description", "input_audio", "temperature"],
        12 => &["tool_call_id", "top_logprobs"],
        13 => &["include_usage"],
        14 => &["length_penalty", "stream_options"],
        15 => &["encoding_format", "response_format", "use_beam_search"],
        16 => &["presence_penalty"],
        17 => &["frequency_penalty", "reasoning_content"],
        18 => &["repetition_penalty"],
        19 => &["parallel_tool_calls"],
        20 => &["chat_template_kwargs"],
        21 => &["max_completion_tokens"],
        _ => return None,
    };
    let first = key.as_bytes().first();
    candidates
        .iter()
        .find(|k| k.as_bytes().first() == first && **k == key)
        .copied()
}

impl Dict {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Json> {
        // Schemas look up every field of a model in every body: comparing length and first
        // byte before the bytes keeps most misses out of `memcmp`.
        let first = key.as_bytes().first();
        self.entries
            .iter()
            .find(|(k, _)| k.len() == key.len() && k.as_bytes().first() == first && &**k == key)
            .map(|(_, v)| v)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Where objects stop being searched linearly for a repeated key: past this many entries a
/// hash index is built, so an object of many keys costs linear time, not quadratic.
const LINEAR_KEYS: usize = 16;

/// How deep arrays and objects may nest. CPython stops near its recursion limit (about 975
/// levels under FastAPI, less as the stack above it grows) with a `RecursionError`, which
/// FastAPI answers as a body it cannot parse. This stops at 512 with that same answer, to keep
/// parsing, validation, `repr` and dropping well inside a 2 MiB thread stack in debug builds; a
/// body nested between 513 and about 975 levels is a known difference (the reference would
/// validate it).
pub const MAX_DEPTH: usize = 512;

/// Python's limit on the digits of an `int` converted from text (`sys.get_int_max_str_digits`).
const MAX_INT_DIGITS: usize = 4300;

/// Why `json.loads` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A `json.JSONDecodeError`: FastAPI answers `json_invalid` with this message and position.
    Syntax {
        /// The bare message (`Expecting value`, …).
        msg: &'static str,
        /// The position, in characters of the decoded text.
        pos: usize,
    },
    /// Anything else (`UnicodeDecodeError`, `RecursionError`, `ValueError` of a too-long int):
    /// FastAPI answers `{"detail":"There was an error parsing the body"}`.
    Unparsable,
}

/// Decodes `bytes` as `json.loads(bytes)` would.
///
/// ```
/// use tower_maas::validate::{DecodeError, Json, loads};
///
/// // Python keeps NaN, a key given twice (the last value wins) and a lone surrogate.
/// assert!(matches!(loads(b"NaN"), Ok(Json::Float(f)) if f.is_nan()));
/// let Json::Dict(dict) = loads(br#"{"a": 1, "a": "two"}"#).unwrap() else { panic!() };
/// assert_eq!(dict.len(), 1);
/// assert!(matches!(loads(br#""\ud800""#), Ok(Json::WideStr(_))));
/// // What FastAPI reports, character position included.
/// assert_eq!(
///     loads(b"{\"a\": }"),
///     Err(DecodeError::Syntax { msg: "Expecting value", pos: 6 })
/// );
/// ```
pub fn loads(bytes: &[u8]) -> Result<Json, DecodeError> {
    parse(decode_text(bytes)?)
}

/// The decoder's second half: the document, from text [`decode_text`] gave.
pub(super) fn parse(text: Text<'_>) -> Result<Json, DecodeError> {
    match text {
        Text::Utf8(text) => Parser::new(text.as_bytes(), Some(text)).document(),
        Text::Wtf8(wtf8) => {
            // Transcoded from UTF-16/32: a `str` too, unless it holds lone surrogates.
            let text = std::str::from_utf8(&wtf8).ok();
            Parser::new(&wtf8, text).document()
        }
    }
}

/// Decoded text: UTF-8 as received (the common case, validated once), or WTF-8 that holds lone
/// surrogates or was transcoded.
pub(super) enum Text<'a> {
    Utf8(&'a str),
    Wtf8(Cow<'a, [u8]>),
}

/// `bytes.decode(json.detect_encoding(bytes), 'surrogatepass')`, as WTF-8: UTF-8 in which the
/// lone surrogates `surrogatepass` lets through keep their 3-byte form.
pub(super) fn decode_text(b: &[u8]) -> Result<Text<'_>, DecodeError> {
    const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";
    let (encoding, body) = if b.starts_with(b"\x00\x00\xfe\xff") {
        (Encoding::Utf32Be, &b[4..])
    } else if b.starts_with(b"\xff\xfe\x00\x00") {
        (Encoding::Utf32Le, &b[4..])
    } else if b.starts_with(b"\xfe\xff") {
        (Encoding::Utf16Be, &b[2..])
    } else if b.starts_with(b"\xff\xfe") {
        (Encoding::Utf16Le, &b[2..])
    } else if let Some(rest) = b.strip_prefix(UTF8_BOM) {
        (Encoding::Utf8, rest)
    } else {
        let encoding = match *b {
            [0, 0, _, _, ..] => Encoding::Utf32Be,
            [0, _, _, _, ..] => Encoding::Utf16Be,
            [_, 0, 0, 0, ..] => Encoding::Utf32Le,
            [_, 0, _, _, ..] => Encoding::Utf16Le,
            [0, _] => Encoding::Utf16Be,
            [_, 0] => Encoding::Utf16Le,
            _ => Encoding::Utf8,
        };
        (encoding, b)
    };
    Ok(Text::Wtf8(match encoding {
        // The SIMD check answers only yes or no; a no is looked at again below.
        Encoding::Utf8 => match simdutf8::basic::from_utf8(body) {
            Ok(text) => return Ok(Text::Utf8(text)),
            Err(_) => Cow::Borrowed(utf8_surrogatepass(body)?),
        },
        Encoding::Utf32Be => Cow::Owned(utf32(body, u32::from_be_bytes)?),
        Encoding::Utf32Le => Cow::Owned(utf32(body, u32::from_le_bytes)?),
        Encoding::Utf16Be => Cow::Owned(utf16(body, u16::from_be_bytes)?),
        Encoding::Utf16Le => Cow::Owned(utf16(body, u16::from_le_bytes)?),
    }))
}

enum Encoding {
    Utf8,
    Utf32Be,
    Utf32Le,
    Utf16Be,
    Utf16Le,
}

/// Valid UTF-8, except that encoded surrogates (`ED A0..BF 80..BF`) are allowed.
fn utf8_surrogatepass(mut rest: &[u8]) -> Result<&[u8], DecodeError> {
    let whole = rest;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => return Ok(whole),
            Err(err) => {
                let at = err.valid_up_to();
                match rest[at..] {
                    [0xed, 0xa0..=0xbf, 0x80..=0xbf, ..] => rest = &rest[at + 3..],
                    _ => return Err(DecodeError::Unparsable),
                }
            }
        }
    }
}

/// Appends code point `c` (a surrogate included) in WTF-8.
fn push_wtf8(out: &mut Vec<u8>, c: u32) {
    match char::from_u32(c) {
        Some(ch) => out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
        None => out.extend_from_slice(&[
            0xe0 | (c >> 12) as u8,
            0x80 | ((c >> 6) & 0x3f) as u8,
            0x80 | (c & 0x3f) as u8,
        ]),
    }
}

fn utf16(b: &[u8], unit: fn([u8; 2]) -> u16) -> Result<Vec<u8>, DecodeError> {
    if b.len() % 2 != 0 {
        return Err(DecodeError::Unparsable);
    }
    let units = b.chunks_exact(2).map(|c| unit([c[0], c[1]]));
    let mut out = Vec::with_capacity(b.len());
    for decoded in char::decode_utf16(units) {
        let c = decoded.map_or_else(|lone| u32::from(lone.unpaired_surrogate()), u32::from);
        push_wtf8(&mut out, c);
    }
    Ok(out)
}

fn utf32(b: &[u8], unit: fn([u8; 4]) -> u32) -> Result<Vec<u8>, DecodeError> {
    if b.len() % 4 != 0 {
        return Err(DecodeError::Unparsable);
    }
    let mut out = Vec::with_capacity(b.len());
    for c in b.chunks_exact(4).map(|c| unit([c[0], c[1], c[2], c[3]])) {
        if c > 0x10_ffff {
            return Err(DecodeError::Unparsable);
        }
        push_wtf8(&mut out, c);
    }
    Ok(out)
}

/// The code points of WTF-8 bytes.
fn code_points(wtf8: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(wtf8.len());
    let mut i = 0;
    while i < wtf8.len() {
        let b = wtf8[i];
        let (len, init) = match b {
            0x00..=0x7f => (1, u32::from(b)),
            0xc0..=0xdf => (2, u32::from(b & 0x1f)),
            0xe0..=0xef => (3, u32::from(b & 0x0f)),
            _ => (4, u32::from(b & 0x07)),
        };
        let c = wtf8[i + 1..(i + len).min(wtf8.len())]
            .iter()
            .fold(init, |c, &cont| (c << 6) | u32::from(cont & 0x3f));
        out.push(c);
        i += len;
    }
    out
}

/// A string from WTF-8 bytes: a plain one when they are UTF-8, else one that keeps its lone
/// surrogates.
fn string_value(wtf8: &[u8]) -> Json {
    match std::str::from_utf8(wtf8) {
        Ok(s) => Json::Str(s.into()),
        Err(_) => {
            let code_points = code_points(wtf8);
            let lossy = code_points
                .iter()
                .map(|&c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect();
            Json::WideStr(Box::new(WideStr {
                lossy,
                code_points: code_points.into(),
            }))
        }
    }
}

/// CPython's scanner over the bytes of valid UTF-8 text. Positions are byte offsets inside, and
/// converted to character offsets only when an error is reported.
pub(crate) struct Parser<'a> {
    s: &'a [u8],
    /// The same bytes as a `str`, when they are UTF-8.
    text: Option<&'a str>,
    depth: usize,
}

/// A failure inside the scanner: a `JSONDecodeError` (at a byte offset), CPython's
/// `StopIteration(idx)` (which `raw_decode` turns into `Expecting value`), or an error that is
/// not a `JSONDecodeError` at all.
pub(crate) enum Fail {
    Syntax(&'static str, usize),
    Stop(usize),
    Unparsable,
}

pub(crate) type Scan<T> = Result<(T, usize), Fail>;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Parser<'a> {
    pub(crate) fn new(s: &'a [u8], text: Option<&'a str>) -> Self {
        Self { s, text, depth: 0 }
    }

    pub(super) fn skip_ws(&self, mut idx: usize) -> usize {
        while idx < self.s.len() && is_ws(self.s[idx]) {
            idx += 1;
        }
        idx
    }

    fn char_pos(&self, byte: usize) -> usize {
        // Counting characters is needed only for the error, never on the success path.
        self.s[..byte.min(self.s.len())]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count()
    }

    /// `JSONDecoder.decode`: value, then only whitespace.
    fn document(&mut self) -> Result<Json, DecodeError> {
        let start = self.skip_ws(0);
        let result = self.scan_once(start).and_then(|(value, end)| {
            let end = self.skip_ws(end);
            if end != self.s.len() {
                return Err(Fail::Syntax("Extra data", end));
            }
            Ok(value)
        });
        result.map_err(|fail| match fail {
            Fail::Syntax(msg, at) => DecodeError::Syntax {
                msg,
                pos: self.char_pos(at),
            },
            Fail::Stop(at) => DecodeError::Syntax {
                msg: "Expecting value",
                pos: self.char_pos(at),
            },
            Fail::Unparsable => DecodeError::Unparsable,
        })
    }

    pub(super) fn literal(&self, idx: usize, word: &[u8]) -> bool {
        self.s[idx..].starts_with(word)
    }

    /// `scan_once_unicode`.
    pub(super) fn scan_once(&mut self, idx: usize) -> Scan<Json> {
        let Some(&c) = self.s.get(idx) else {
            return Err(Fail::Stop(idx));
        };
        match c {
            b'"' => self.scan_string(idx + 1),
            b'{' => self.nested(|p| p.parse_object(idx + 1)),
            b'[' => self.nested(|p| p.parse_array(idx + 1)),
            b'n' if self.literal(idx, b"null") => Ok((Json::Null, idx + 4)),
            b't' if self.literal(idx, b"true") => Ok((Json::Bool(true), idx + 4)),
            b'f' if self.literal(idx, b"false") => Ok((Json::Bool(false), idx + 5)),
            b'N' if self.literal(idx, b"NaN") => Ok((Json::Float(f64::NAN), idx + 3)),
            b'I' if self.literal(idx, b"Infinity") => Ok((Json::Float(f64::INFINITY), idx + 8)),
            b'-' if self.literal(idx, b"-Infinity") => {
                Ok((Json::Float(f64::NEG_INFINITY), idx + 9))
            }
            _ => self.match_number(idx),
        }
    }

    fn nested(&mut self, parse: impl FnOnce(&mut Self) -> Scan<Json>) -> Scan<Json> {
        if self.depth >= MAX_DEPTH {
            return Err(Fail::Unparsable);
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        result
    }

    /// `_match_number_unicode`.
    pub(super) fn match_number(&self, start: usize) -> Scan<Json> {
        let s = self.s;
        let digit = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
        let mut idx = start;
        if s[idx] == b'-' {
            idx += 1;
            if idx >= s.len() {
                return Err(Fail::Stop(start));
            }
        }
        match s[idx] {
            b'1'..=b'9' => {
                idx += 1;
                while digit(idx) {
                    idx += 1;
                }
            }
            b'0' => idx += 1,
            _ => return Err(Fail::Stop(start)),
        }
        let mut is_float = false;
        // `idx < end_idx`: a '.' or 'e' that is the last character is not part of the number.
        if idx + 1 < s.len() && s[idx] == b'.' && digit(idx + 1) {
            is_float = true;
            idx += 2;
            while digit(idx) {
                idx += 1;
            }
        }
        if idx + 1 < s.len() && matches!(s[idx], b'e' | b'E') {
            let e_start = idx;
            idx += 1;
            if idx + 1 < s.len() && matches!(s[idx], b'-' | b'+') {
                idx += 1;
            }
            while digit(idx) {
                idx += 1;
            }
            if s[idx - 1].is_ascii_digit() {
                is_float = true;
            } else {
                idx = e_start;
            }
        }
        // Only ASCII digits, signs, '.', 'e' were matched.
        let literal = std::str::from_utf8(&s[start..idx]).map_err(|_| Fail::Unparsable)?;
        if is_float {
            // Rust's parser rounds correctly, as Python's `float(str)` does; overflow is ±inf.
            let value = literal.parse().map_err(|_| Fail::Unparsable)?;
            return Ok((Json::Float(value), idx));
        }
        if let Ok(value) = literal.parse::<i64>() {
            return Ok((Json::Int(Int::Small(value)), idx));
        }
        let digits = literal.trim_start_matches('-');
        if digits.len() > MAX_INT_DIGITS {
            return Err(Fail::Unparsable);
        }
        Ok((Json::Int(Int::Big(literal.into())), idx))
    }

    /// A string value.
    fn scan_string(&self, end: usize) -> Scan<Json> {
        let (wtf8, next) = self.scan_raw(end)?;
        let value = match (wtf8, self.text) {
            // An unescaped string of UTF-8 text: a slice between two ASCII quotes, so on
            // character boundaries, and already valid.
            (Cow::Borrowed(_), Some(text)) => Json::Str(text[end..next - 1].into()),
            (wtf8, _) => string_value(&wtf8),
        };
        Ok((value, next))
    }

    /// An object key; one with lone surrogates keeps U+FFFD in their place.
    fn scan_key(&self, end: usize) -> Scan<Key> {
        let (wtf8, next) = self.scan_raw(end)?;
        let key = match (wtf8, self.text) {
            (Cow::Borrowed(_), Some(text)) => {
                let key = &text[end..next - 1];
                known_key(key).map_or_else(|| Cow::Owned(key.to_owned()), Cow::Borrowed)
            }
            (wtf8, _) => Cow::Owned(String::from_utf8_lossy(&wtf8).into_owned()),
        };
        Ok((key, next))
    }

    /// `scanstring_unicode`, giving the WTF-8 bytes of the string: `end` is the index after the
    /// opening quote.
    pub(crate) fn scan_raw(&self, end: usize) -> Scan<Cow<'a, [u8]>> {
        let s = self.s;
        let begin = end - 1;
        // Only strings with escapes are copied; the rest are one slice.
        let mut out: Option<Vec<u8>> = None;
        let mut chunk_start = end;
        let mut next = end;
        loop {
            // Find the end of the string or the next escape.
            next = find_special(s, next);
            if next >= s.len() {
                return Err(Fail::Syntax("Unterminated string starting at", begin));
            }
            if s[next] <= 0x1f {
                return Err(Fail::Syntax("Invalid control character at", next));
            }
            let chunk = &s[chunk_start..next];
            if s[next] == b'"' {
                let value = match out {
                    None => Cow::Borrowed(chunk),
                    Some(mut buf) => {
                        buf.extend_from_slice(chunk);
                        Cow::Owned(buf)
                    }
                };
                return Ok((value, next + 1));
            }
            let buf = out.get_or_insert_with(Vec::new);
            buf.extend_from_slice(chunk);
            // A backslash.
            next += 1;
            if next == s.len() {
                return Err(Fail::Syntax("Unterminated string starting at", begin));
            }
            if s[next] != b'u' {
                let end = next + 1;
                let unescaped = match s[next] {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    // At the backslash.
                    _ => return Err(Fail::Syntax("Invalid \\escape", end - 2)),
                };
                buf.push(unescaped);
                next = end;
            } else {
                next += 1;
                let mut end = next + 4;
                // At least one character must follow the four digits; errors point at the `u`.
                if end >= s.len() {
                    return Err(Fail::Syntax("Invalid \\uXXXX escape", next - 1));
                }
                let mut c = hex4(s, next).ok_or(Fail::Syntax("Invalid \\uXXXX escape", end - 5))?;
                next = end;
                if (0xd800..0xdc00).contains(&c)
                    && end + 6 < s.len()
                    && s[end] == b'\\'
                    && s[end + 1] == b'u'
                {
                    let c2 =
                        hex4(s, end + 2).ok_or(Fail::Syntax("Invalid \\uXXXX escape", end + 1))?;
                    if (0xdc00..0xe000).contains(&c2) {
                        c = 0x10000 + ((c - 0xd800) << 10) + (c2 - 0xdc00);
                        end += 6;
                        next = end;
                    }
                }
                // A lone surrogate stays, as Python keeps it.
                push_wtf8(buf, c);
            }
            chunk_start = next;
        }
    }

    /// `_parse_object_unicode`: `idx` is the index after `{`.
    fn parse_object(&mut self, idx: usize) -> Scan<Json> {
        let s = self.s;
        let mut dict = Dict::default();
        let mut index: Option<std::collections::HashMap<Arc<str>, usize>> = None;
        let mut idx = self.skip_ws(idx);
        if s.get(idx) == Some(&b'}') {
            return Ok((Json::Dict(dict), idx + 1));
        }
        loop {
            if s.get(idx) != Some(&b'"') {
                return Err(Fail::Syntax(
                    "Expecting property name enclosed in double quotes",
                    idx,
                ));
            }
            let (key, next) = self.scan_key(idx + 1)?;
            idx = self.skip_ws(next);
            if s.get(idx) != Some(&b':') {
                return Err(Fail::Syntax("Expecting ':' delimiter", idx));
            }
            idx = self.skip_ws(idx + 1);
            let (value, next) = self.scan_once(idx)?;
            insert(&mut dict, &mut index, key, value);
            idx = self.skip_ws(next);
            match s.get(idx) {
                Some(b'}') => return Ok((Json::Dict(dict), idx + 1)),
                Some(b',') => idx = self.skip_ws(idx + 1),
                _ => return Err(Fail::Syntax("Expecting ',' delimiter", idx)),
            }
        }
    }

    /// `_parse_array_unicode`: `idx` is the index after `[`.
    fn parse_array(&mut self, idx: usize) -> Scan<Json> {
        let s = self.s;
        let mut items = Vec::new();
        let mut idx = self.skip_ws(idx);
        if s.get(idx) == Some(&b']') {
            return Ok((Json::List(items), idx + 1));
        }
        loop {
            let (value, next) = self.scan_once(idx)?;
            items.push(value);
            idx = self.skip_ws(next);
            match s.get(idx) {
                Some(b']') => return Ok((Json::List(items), idx + 1)),
                Some(b',') => idx = self.skip_ws(idx + 1),
                _ => return Err(Fail::Syntax("Expecting ',' delimiter", idx)),
            }
        }
    }
}

/// `PyDict_SetItem`: a repeated key keeps its first position and takes the new value.
fn insert(
    dict: &mut Dict,
    index: &mut Option<std::collections::HashMap<Arc<str>, usize>>,
    key: Key,
    value: Json,
) {
    let entries = &mut dict.entries;
    if let Some(index) = index {
        if let Some(&at) = index.get(&*key) {
            entries[at].1 = value;
        } else {
            index.insert(Arc::from(&*key), entries.len());
            entries.push((key, value));
        }
        return;
    }
    if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = value;
        return;
    }
    entries.push((key, value));
    if entries.len() > LINEAR_KEYS {
        *index = Some(
            entries
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (Arc::from(&**k), i))
                .collect(),
        );
    }
}

/// The four hex digits of a `\u` escape starting at `at`, as one UTF-16 code unit.
#[inline]
fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some((acc << 4) | v)
    })
}
