//! Counting prompt tokens for the context-length check and the token limiter.

/// Counts the tokens of a text.
///
/// The count decides vLLM's context-length refusal and is what the token limiter reserves, so an
/// estimate errs on the high side.
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
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EstimatingCounter;

impl TokenCounter for EstimatingCounter {
    fn count(&self, text: &str) -> u64 {
        let bytes = text.as_bytes();
        let ascii = bytes.iter().filter(|b| b.is_ascii()).count() as u64;
        // Bytes that start a multi-byte character (not 0b10xx_xxxx continuation bytes).
        let wide = bytes.iter().filter(|&&b| b >= 0xc0).count() as u64;
        ascii.div_ceil(4) + wide
    }
}

/// Tokens a chat template adds around each message (role markers and separators), as OpenAI
/// documents for its chat models.
pub(crate) const TOKENS_PER_MESSAGE: u64 = 4;
