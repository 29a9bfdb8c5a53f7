//! Counting prompt tokens for the context-length check and the token limiter.

/// Counts the tokens of a text.
///
/// The count decides vLLM's context-length refusal and is what the token limiter reserves, so an
/// estimate errs on the high side.
///
/// A counter of your own, given to the validator:
///
/// ```
/// use tower_maas::validate::{RequestSchemaValidatorLayer, TokenCounter};
///
/// /// A token a word, and one more for every 6 bytes of a long word.
/// struct Words;
///
/// impl TokenCounter for Words {
///     fn count(&self, text: &str) -> u64 {
///         text.split_whitespace().map(|w| 1 + w.len() as u64 / 6).sum()
///     }
/// }
///
/// assert_eq!(Words.count("a tokenizer of sorts"), 5);
/// let layer = RequestSchemaValidatorLayer::new().token_counter(Words);
/// # let _ = layer;
/// ```
pub trait TokenCounter: Send + Sync + 'static {
    /// The number of tokens `text` encodes to.
    fn count(&self, text: &str) -> u64;
}

/// The default, fast estimate: a token per 4 bytes of ASCII (rounded up) and a token per
/// character beyond ASCII, in one pass and without allocation.
///
/// Close to BPE tokenizers on English and code, and on the high side for CJK text, where one
/// character is about one token.
///
/// ```
/// use tower_maas::validate::{EstimatingCounter, TokenCounter};
///
/// assert_eq!(EstimatingCounter.count("Hello, world"), 3);
/// assert_eq!(EstimatingCounter.count("你好"), 2);
/// assert_eq!(EstimatingCounter.count("naïve café, 東京 and 🙂!"), 9);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EstimatingCounter;

impl TokenCounter for EstimatingCounter {
    fn count(&self, text: &str) -> u64 {
        // Eight bytes a step: a byte with its top bit clear is ASCII; one with its two top bits
        // set starts a multi-byte character.
        const HIGH: u64 = 0x8080_8080_8080_8080;
        const ONES: u64 = 0x0101_0101_0101_0101;
        // The number of bytes of `flags` (each 0 or 1) summed in the top byte by one multiply.
        let sum = |flags: u64| flags.wrapping_mul(ONES) >> 56;
        let bytes = text.as_bytes();
        let mut words = bytes.chunks_exact(8);
        let (mut high, mut wide) = (0u64, 0u64);
        for word in &mut words {
            let w = u64::from_le_bytes([
                word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
            ]);
            high += sum((w & HIGH) >> 7);
            wide += sum((w & (w << 1) & HIGH) >> 7);
        }
        for &b in words.remainder() {
            high += u64::from(b >= 0x80);
            wide += u64::from(b >= 0xc0);
        }
        let ascii = bytes.len() as u64 - high;
        ascii.div_ceil(4) + wide
    }
}

/// Tokens a chat template adds around each message (role markers and separators), as OpenAI
/// documents for its chat models.
pub(crate) const TOKENS_PER_MESSAGE: u64 = 4;

/// An exact count with an OpenAI BPE encoding (`cl100k_base`, `o200k_base`), from
/// [`tiktoken-rs`](https://docs.rs/tiktoken-rs), whose encodings ship inside the crate: no
/// download at run time.
///
/// ```
/// use tower_maas::validate::{TiktokenCounter, TokenCounter};
///
/// let counter = TiktokenCounter::cl100k().unwrap();
/// assert_eq!(counter.count("hello world"), 2);
/// ```
#[cfg(feature = "tiktoken")]
#[derive(Clone)]
pub struct TiktokenCounter {
    bpe: std::sync::Arc<tiktoken_rs::CoreBPE>,
}

#[cfg(feature = "tiktoken")]
impl TiktokenCounter {
    /// `cl100k_base` (GPT-3.5/GPT-4).
    pub fn cl100k() -> Result<Self, crate::BoxError> {
        Ok(Self::new(tiktoken_rs::cl100k_base()?))
    }

    /// `o200k_base` (GPT-4o).
    pub fn o200k() -> Result<Self, crate::BoxError> {
        Ok(Self::new(tiktoken_rs::o200k_base()?))
    }

    /// Any encoding built with `tiktoken-rs`.
    pub fn new(bpe: tiktoken_rs::CoreBPE) -> Self {
        Self {
            bpe: std::sync::Arc::new(bpe),
        }
    }
}

#[cfg(feature = "tiktoken")]
impl TokenCounter for TiktokenCounter {
    fn count(&self, text: &str) -> u64 {
        self.bpe.encode_ordinary(text).len() as u64
    }
}

#[cfg(feature = "tiktoken")]
impl std::fmt::Debug for TiktokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiktokenCounter").finish_non_exhaustive()
    }
}
