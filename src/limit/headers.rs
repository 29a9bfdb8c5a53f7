//! OpenAI's rate-limit headers, written in the response head.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::clock::Nanos;
use super::store::Snapshot;

pub(crate) const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
pub(crate) const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
pub(crate) const REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub(crate) const REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-tokens");
pub(crate) const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
pub(crate) const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// Writes the headers of the dimensions that are limited.
pub(crate) fn write(
    headers: &mut HeaderMap,
    limits: (Option<u64>, Option<u64>),
    snapshot: &Snapshot,
) {
    let dims = [
        (
            limits.0,
            snapshot.requests(),
            [LIMIT_REQUESTS, REMAINING_REQUESTS, RESET_REQUESTS],
        ),
        (
            limits.1,
            snapshot.tokens(),
            [LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS],
        ),
    ];
    // Every value is written into one buffer and each header shares a slice of it: two
    // allocations (the bytes, then the count they share) for up to six values instead of six.
    let mut text = Buffer {
        bytes: [0; 128],
        len: 0,
    };
    let mut values: [(usize, usize); 6] = [(0, 0); 6];
    for (d, (limit, state, _)) in dims.iter().enumerate() {
        if let (Some(limit), Some((remaining, reset))) = (*limit, *state) {
            let at = d * 3;
            let start = text.len;
            let mut ends = [0; 3];
            let written = decimal(&mut text, limit)
                .map(|()| ends[0] = text.len)
                .and_then(|()| decimal(&mut text, remaining.min(limit)))
                .map(|()| ends[1] = text.len)
                .and_then(|()| duration_into(&mut text, reset))
                .map(|()| ends[2] = text.len);
            if written.is_err() {
                text.len = start;
                continue;
            }
            values[at] = (start, ends[0]);
            values[at + 1] = (ends[0], ends[1]);
            values[at + 2] = (ends[1], ends[2]);
        }
    }
    if text.len == 0 {
        return;
    }
    let text = bytes::Bytes::copy_from_slice(&text.bytes[..text.len]);
    // Up to six headers, and the `x-request-id` the envelope adds on the way out: one growth
    // of the map, not two (the second moves every entry to a new, larger allocation).
    headers.reserve(6 + 1);
    for (d, (_, _, names)) in dims.into_iter().enumerate() {
        for (k, name) in names.into_iter().enumerate() {
            let (start, end) = values[d * 3 + k];
            if end > start {
                // Digits and the duration's letters: always a valid value.
                if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

/// Room for the six values at their longest (four 20-digit numbers, two durations of at most
/// 18 characters); a dimension whose values would not fit is left out, not cut.
struct Buffer {
    bytes: [u8; 128],
    len: usize,
}

impl std::fmt::Write for Buffer {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `retry-after` in whole seconds, rounded up: a client that waits that long is admitted.
pub(crate) fn retry_after(wait: Nanos) -> HeaderValue {
    HeaderValue::from(wait.div_ceil(1_000_000_000).max(1))
}

/// Appends a duration as OpenAI writes it (Go's `time.Duration` format, to the millisecond): `0s`,
/// `12ms`, `1.5s`, `6m0s`, `1h2m3s`.
fn duration_into(out: &mut impl std::fmt::Write, nanos: Nanos) -> std::fmt::Result {
    let ms = nanos.div_ceil(1_000_000);
    if ms == 0 {
        return out.write_str("0s");
    }
    if ms < 1000 {
        decimal(out, ms)?;
        return out.write_str("ms");
    }
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        decimal(out, h)?;
        out.write_char('h')?;
    }
    if h > 0 || m > 0 {
        decimal(out, m)?;
        out.write_char('m')?;
    }
    decimal(out, s)?;
    if frac > 0 {
        // Milliseconds as a fraction, trailing zeros dropped: 500 → .5, 40 → .04, 5 → .005
        // (1000 + frac keeps the leading zeros, the `1` is cut off).
        out.write_char('.')?;
        out.write_str(itoa::Buffer::new().format(1000 + frac)[1..].trim_end_matches('0'))?;
    }
    out.write_char('s')
}

/// `n` in decimal, without the formatting machinery (six of these per response).
fn decimal(out: &mut impl std::fmt::Write, n: u64) -> std::fmt::Result {
    out.write_str(itoa::Buffer::new().format(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duration(nanos: Nanos) -> String {
        let mut out = String::new();
        duration_into(&mut out, nanos).unwrap();
        out
    }

    #[test]
    fn durations_as_openai_writes_them() {
        let ms = 1_000_000;
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(1), "1ms");
        assert_eq!(duration(12 * ms), "12ms");
        assert_eq!(duration(1500 * ms), "1.5s");
        assert_eq!(duration(1040 * ms), "1.04s");
        assert_eq!(duration(1005 * ms), "1.005s");
        assert_eq!(duration(1000 * ms), "1s");
        assert_eq!(duration(59_600 * ms), "59.6s");
        assert_eq!(duration(360_000 * ms), "6m0s");
        assert_eq!(duration(3_723_004 * ms), "1h2m3.004s");
        assert_eq!(duration(1010 * ms), "1.01s");
        assert_eq!(duration(1100 * ms), "1.1s");
        assert_eq!(duration(1001 * ms), "1.001s");
        assert_eq!(duration(1230 * ms), "1.23s");
        assert_eq!(duration(u64::MAX), "5124095h34m33.71s");
        let mut text = String::new();
        for n in [0, 7, 10, 99, 100, 12_345, u64::MAX] {
            text.clear();
            decimal(&mut text, n).unwrap();
            assert_eq!(text, n.to_string());
        }
        assert_eq!(retry_after(1), "1");
        assert_eq!(retry_after(2_000_000_000), "2");
        assert_eq!(retry_after(2_000_000_001), "3");
    }
}
