//! Scanning JSON text, shared by the validator's readers and the content filter's.

/// The first index at or after `i` holding `"`, `\\` or a control character (below 0x20), or
/// `s.len()`. Eight bytes at a time: long message texts dominate request bodies.
#[inline]
pub(crate) fn find_special(s: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // Bit-twiddling "has a zero byte" and "has a byte below 0x20": a flag can be false only
        // above a true one (a borrow runs upwards), so the lowest flag is the first match.
        let found = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&d) = s.get(i) {
        if d == b'"' || d == b'\\' || d <= 0x1f {
            return i;
        }
        i += 1;
    }
    i
}
