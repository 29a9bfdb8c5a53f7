//! The default classifier: terms found with Aho-Corasick in normalised text.

use std::borrow::Cow;
use std::fmt;
use std::future::Ready;
use std::path::Path;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization::UnicodeNormalization;

use super::classifier::{Classified, Classifier, Side, Verdict};
use crate::body::BoxError;

/// Finds configured terms in texts, after normalising both the same way: Unicode NFKC
/// (full-width letters, ligatures and the like become their plain forms), lowercase, and
/// zero-width characters and soft hyphens removed. With
/// [`ignore_separators`](KeywordClassifierBuilder::ignore_separators), everything but letters
/// and digits is removed too, so `b.a.d`, `b a d` and `b-a-d` match `bad`.
///
/// One automaton matches every term in one pass over the text.
///
/// ```
/// use tower_maas::risk::{Classified, Classifier, KeywordClassifier, Side, Verdict};
///
/// let classifier = KeywordClassifier::builder()
///     .term("violence", "forbidden phrase")
///     .ignore_separators(true)
///     .build()
///     .unwrap();
/// let Classified::Now(verdict) = classifier.classify(Side::Input, "a F.o.r.b.i.d.d.e.n  phrase") else {
///     unreachable!()
/// };
/// assert_eq!(verdict.unwrap(), Verdict::Block { category: "violence".into() });
/// ```
#[derive(Clone)]
pub struct KeywordClassifier {
    matcher: Arc<AhoCorasick>,
    categories: Arc<[Arc<str>]>,
    ignore_separators: bool,
    longest: usize,
}

/// Builds a [`KeywordClassifier`].
///
/// ```
/// use tower_maas::risk::KeywordClassifier;
///
/// let terms = KeywordClassifier::builder()
///     .term("fraud", "wire me the money")
///     .terms_from_text("# one term a line\n[violence]\nforbidden phrase\n")
///     .build()
///     .unwrap();
/// assert_eq!(terms.longest_term(), "wire me the money".len());
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeywordClassifierBuilder {
    terms: Vec<(Arc<str>, String)>,
    ignore_separators: bool,
}

impl KeywordClassifierBuilder {
    /// Adds `term` under `category`.
    pub fn term(mut self, category: impl Into<Arc<str>>, term: impl Into<String>) -> Self {
        self.terms.push((category.into(), term.into()));
        self
    }

    /// Adds terms from text: one term a line; `[category]` starts a section (terms before any
    /// section are `default`); blank lines and lines starting with `#` are skipped.
    pub fn terms_from_text(mut self, text: &str) -> Self {
        let mut category: Arc<str> = Arc::from("default");
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                category = Arc::from(name.trim());
                continue;
            }
            self.terms.push((category.clone(), line.to_owned()));
        }
        self
    }

    /// Adds terms from a file in the format of [`terms_from_text`](Self::terms_from_text).
    pub fn terms_from_file(self, path: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(self.terms_from_text(&std::fs::read_to_string(path)?))
    }

    /// Also ignore everything but letters and digits, in terms and texts alike.
    pub fn ignore_separators(mut self, on: bool) -> Self {
        self.ignore_separators = on;
        self
    }

    /// Builds the automaton.
    pub fn build(self) -> Result<KeywordClassifier, BoxError> {
        let mut patterns = Vec::new();
        let mut categories = Vec::new();
        for (category, term) in self.terms {
            let term = normalize(&term, self.ignore_separators).into_owned();
            if !term.is_empty() {
                patterns.push(term);
                categories.push(category);
            }
        }
        let longest = patterns
            .iter()
            .map(|p| p.chars().count())
            .max()
            .unwrap_or(0);
        // ASCII case is left to the automaton, so ASCII text is copied, not rewritten.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .ascii_case_insensitive(true)
            .build(&patterns)?;
        Ok(KeywordClassifier {
            matcher: Arc::new(matcher),
            categories: categories.into(),
            ignore_separators: self.ignore_separators,
            longest,
        })
    }
}

impl KeywordClassifier {
    /// A builder with no terms.
    pub fn builder() -> KeywordClassifierBuilder {
        KeywordClassifierBuilder::default()
    }

    /// The longest term, in characters after normalisation: a streaming window must overlap
    /// by at least this much to catch a term split across chunks.
    pub fn longest_term(&self) -> usize {
        self.longest
    }

    /// The category of the first term found in `text`, if any.
    pub fn find(&self, text: &str) -> Option<&Arc<str>> {
        let text = normalize(text, self.ignore_separators);
        self.matcher
            .find(text.as_ref())
            .map(|m| &self.categories[m.pattern().as_usize()])
    }
}

/// NFKC, lowercase beyond ASCII (ASCII case is the automaton's, which ignores it),
/// zero-width characters removed; with `separators`, only letters and digits kept.
///
/// ASCII is already in NFKC, and most other text passes NFKC's quick check (CJK does): those
/// runs are only lowercased and filtered. The last ASCII character before a non-ASCII run goes
/// with the run, since a combining mark after it may compose with it.
pub(crate) fn normalize(text: &str, separators: bool) -> Cow<'_, str> {
    if !separators && already_normal(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let keep = |c: char| !is_invisible(c) && (!separators || c.is_alphanumeric());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii() {
            i += 1;
        }
        let ascii_end = if i < bytes.len() && i > start {
            i - 1
        } else {
            i
        };
        let ascii = &text[start..ascii_end];
        if separators {
            out.extend(ascii.chars().filter(char::is_ascii_alphanumeric));
        } else {
            out.push_str(ascii);
        }
        if ascii_end == bytes.len() {
            break;
        }
        while i < bytes.len() && !bytes[i].is_ascii() {
            i += 1;
        }
        // Ideographs have no case, no decomposition and compose with nothing, before or after:
        // they are copied as they are, and what lies between them is normalised on its own.
        let run = &text[ascii_end..i];
        let mut rest = 0;
        let mut ideographs = None;
        for (at, c) in run.char_indices() {
            if is_ideograph(c) {
                if ideographs.is_none() {
                    normalize_run(&run[rest..at], &mut out, keep);
                    ideographs = Some(at);
                }
            } else if let Some(from) = ideographs.take() {
                out.push_str(&run[from..at]);
                rest = at;
            }
        }
        match ideographs {
            Some(from) => out.push_str(&run[from..]),
            None => normalize_run(&run[rest..], &mut out, keep),
        }
    }
    Cow::Owned(out)
}

/// Whether [`normalize`] (separators kept) would give `text` back unchanged: it holds only
/// ASCII, ideographs and the CJK punctuation of `is_stable_mark`, none of which has case,
/// a compatibility form or a mark to compose with. Most chat text passes, and is then searched
/// where it lies instead of copied.
fn already_normal(text: &str) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let Some(word) = b.get(i..i + 8) {
            let high = u64::from_le_bytes(word.try_into().unwrap_or_default()) & HIGH;
            // The ASCII bytes before the first that is not, all at once.
            i += (high.trailing_zeros() / 8) as usize;
            if high == 0 {
                continue;
            }
        }
        match b[i] {
            0..=0x7f => i += 1,
            // Three-byte sequences (`text` is UTF-8, so both continuation bytes follow), read
            // off the encoding without decoding: the same set as `is_ideograph` and
            // `is_stable_mark` (a test holds them to it for every three-byte character).
            // U+5000–U+9FFF: ideographs, the bulk of Chinese text, told by the lead byte.
            0xe5..=0xe9 => {
                // A run of them, on their lead bytes alone.
                i += 3;
                while b.get(i).is_some_and(|lead| (0xe5..=0xe9).contains(lead)) {
                    i += 3;
                }
            }
            lead @ 0xe0..=0xef => {
                let (b1, b2) = (b[i + 1], b[i + 2]);
                let stable = match lead {
                    // U+4000–U+4FFF: ideographs, but for the hexagrams U+4DC0–U+4DFF.
                    0xe4 => b1 != 0xb7,
                    // U+3400–U+3FFF (extension A), and the ideographic comma, full stop and
                    // brackets.
                    0xe3 => b1 >= 0x90 || (b1 == 0x80 && matches!(b2, 0x81 | 0x82 | 0x88..=0x91)),
                    // The curly quotes.
                    0xe2 => b1 == 0x80 && matches!(b2, 0x98 | 0x99 | 0x9c | 0x9d),
                    _ => false,
                };
                if !stable {
                    return false;
                }
                i += 3;
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
/// CJK punctuation that NFKC leaves alone and nothing composes with: the ideographic comma
/// and full stop, the corner, angle and lenticular brackets, and curly quotes.
fn is_stable_mark(c: char) -> bool {
    matches!(
        c,
        '\u{3001}' | '\u{3002}' | '\u{3008}'
            ..='\u{3011}' | '\u{2018}' | '\u{2019}' | '\u{201c}' | '\u{201d}'
    )
}

/// A run with no ideograph: lowercased and filtered, through NFKC unless its quick check says
/// it is already normalised.
fn normalize_run(run: &str, out: &mut String, keep: impl Fn(char) -> bool) {
    use unicode_normalization::{IsNormalized, is_nfkc_quick};

    if run.is_empty() {
        return;
    }
    // ASCII case is left to the automaton, as in the ASCII runs.
    let push = |c: char| {
        if !keep(c) {
        } else if c.is_ascii() {
            out.push(c);
        } else {
            out.extend(c.to_lowercase());
        }
    };
    if is_nfkc_quick(run.chars()) == IsNormalized::Yes {
        run.chars().for_each(push);
    } else {
        run.nfkc().for_each(push);
    }
}

/// CJK unified ideographs (the basic block and extension A), the bulk of Chinese text.
fn is_ideograph(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}')
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
    )
}

impl Classifier for KeywordClassifier {
    type Future = Ready<Result<Verdict, BoxError>>;

    fn classify(&self, _: Side, text: &str) -> Classified<Self::Future> {
        Classified::Now(Ok(match self.find(text) {
            Some(category) => Verdict::Block {
                category: category.clone(),
            },
            None => Verdict::Pass,
        }))
    }
}

impl fmt::Debug for KeywordClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeywordClassifier")
            .field("terms", &self.categories.len())
            .field("ignore_separators", &self.ignore_separators)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(c: &KeywordClassifier, text: &str) -> bool {
        c.find(text).is_some()
    }

    #[test]
    fn normalisation_defeats_the_usual_tricks() {
        let plain = KeywordClassifier::builder()
            .term("x", "bad word")
            .build()
            .unwrap();
        assert!(blocks(&plain, "a BAD WORD here"));
        assert!(blocks(&plain, "ｂａｄ ｗｏｒｄ")); // full-width
        assert!(blocks(&plain, "b\u{200b}ad wo\u{feff}rd")); // zero-width
        assert!(!blocks(&plain, "b.a.d word"));
        let loose = KeywordClassifier::builder()
            .term("x", "bad word")
            .ignore_separators(true)
            .build()
            .unwrap();
        assert!(blocks(&loose, "b.a.d w o r d"));
        assert!(blocks(&loose, "B-A-D_WORD"));
        assert!(!blocks(&loose, "a good word"));
    }

    #[test]
    fn the_fast_paths_agree_with_plain_nfkc() {
        let slow = |t: &str, sep: bool| -> String {
            t.nfkc()
                .filter(|&c| !is_invisible(c) && (!sep || c.is_alphanumeric()))
                .flat_map(|c| {
                    let lower: Vec<char> = if c.is_ascii() {
                        vec![c]
                    } else {
                        c.to_lowercase().collect()
                    };
                    lower
                })
                .collect()
        };
        for text in [
            "plain ASCII Text, with Punctuation!",
            "cafe\u{301} vs café",
            "ｆｕｌｌ ｗｉｄｔｈ and ﬁ ligature",
            "快速的棕色狐狸 ABC 跳过",
            "漢字かな\u{3099}カナ㐀",
            "漢\u{301}字\u{3099}\u{301}a漢。ｆ漢",
            "。漢字、",
            "A\u{301}漢e\u{301}",
            "e\u{301}\u{301}x",
            "zero\u{200b}width\u{feff}",
            "",
            "é",
        ] {
            for sep in [false, true] {
                assert_eq!(normalize(text, sep), slow(text, sep), "{text:?} {sep}");
            }
        }
    }

    #[test]
    fn text_already_normal_is_searched_where_it_lies() {
        for text in ["plain ASCII", "快速的棕色狐狸。「引号」“quote” ABC、㐀", ""]
        {
            assert!(
                matches!(normalize(text, false), Cow::Borrowed(_)),
                "{text:?}"
            );
        }
        for text in [
            "ｆ",
            "é",
            "Σ",
            "a\u{301}",
            "漢\u{3099}",
            "\u{3000}",
            "😀",
            "\u{200b}",
        ] {
            assert!(matches!(normalize(text, false), Cow::Owned(_)), "{text:?}");
        }
        // Read off the bytes, the set is the characters' own.
        for c in '\u{800}'..='\u{ffff}' {
            let expected = is_ideograph(c) || is_stable_mark(c);
            assert_eq!(already_normal(&c.to_string()), expected, "{c:?}");
        }
        // Every mark taken as it lies is one NFKC keeps, with no case and no combining class.
        for c in ('\u{2000}'..='\u{303f}').filter(|&c| is_stable_mark(c)) {
            let s = c.to_string();
            assert_eq!(s.nfkc().collect::<String>(), s, "{c:?}");
            assert_eq!(c.to_lowercase().collect::<String>(), s, "{c:?}");
            assert_eq!(unicode_normalization::char::canonical_combining_class(c), 0);
            // Nothing before or after composes with it.
            for other in ['a', '漢', '。'] {
                for pair in [[c, other], [other, c]] {
                    let pair: String = pair.into_iter().collect();
                    assert_eq!(pair.nfkc().collect::<String>(), pair, "{c:?} {other:?}");
                }
            }
        }
    }

    proptest::proptest! {
        /// Any mix of ASCII, ideographs, combining marks, compatibility forms and Hangul jamo
        /// (which compose) normalises as plain NFKC does.
        #[test]
        fn the_fast_paths_agree_with_plain_nfkc_on_any_mix(
            chars in proptest::collection::vec(proptest::sample::select(vec![
                'a', 'E', ' ', '.', '漢', '字', '㐀', '\u{301}', '\u{3099}', '\u{327}', 'か', 'ｆ',
                'ﬁ', '。', '、', '「', '”', '\u{1100}', '\u{1161}', '\u{11a8}', '\u{200b}', 'Σ', 'é', '①',
            ]), 0..40),
            sep in proptest::bool::ANY,
        ) {
            let text: String = chars.into_iter().collect();
            let slow: String = text
                .nfkc()
                .filter(|&c| !is_invisible(c) && (!sep || c.is_alphanumeric()))
                .flat_map(|c| if c.is_ascii() { vec![c] } else { c.to_lowercase().collect() })
                .collect();
            proptest::prop_assert_eq!(normalize(&text, sep), slow);
        }
    }

    #[test]
    fn terms_from_text_with_sections() {
        let c = KeywordClassifier::builder()
            .terms_from_text("# list\nfoo\n[weapons]\nbar baz\n\n")
            .build()
            .unwrap();
        assert_eq!(c.find("xx foo").map(|c| &**c), Some("default"));
        assert_eq!(c.find("BAR BAZ").map(|c| &**c), Some("weapons"));
        assert_eq!(c.longest_term(), 7);
    }
}
