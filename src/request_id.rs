//! Request ids: 32 lowercase hex digits, as APIG writes them.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use http::header::HeaderName;

/// The `x-request-id` header, which every response of the gateway carries.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id: 32 lowercase hexadecimal digits (`d0ddda0fcdd0cc23a1588fafe4261234`).
///
/// [`ErrorEnvelope`](crate::ErrorEnvelope) puts one into every request's extensions and every
/// response's `x-request-id` header; APIG error bodies repeat it as `request_id`.
///
/// Ids are unique within a process and unpredictable across processes, but they are not secrets:
/// do not use them for anything that needs cryptographic randomness.
///
/// ```
/// use tower_maas::RequestId;
///
/// let id = RequestId::generate();
/// assert_eq!(id.as_str().len(), 32);
/// assert!("D0DDDA0FCDD0CC23A1588FAFE4261234".parse::<RequestId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// A fresh id: a process-wide counter pushed through a bijective mixer keyed per process, so
    /// two ids of one process never collide and ids of different processes do not line up.
    pub fn generate() -> Self {
        static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
        let &(k0, k1) = KEYS.get_or_init(|| {
            let state = RandomState::new();
            (state.hash_one(0x6d61_6173_u64), state.hash_one(0x6964_u64))
        });
        let n = next_count();
        let hi = mix(n ^ k0);
        let lo = mix(n.wrapping_add(k1));
        let mut out = [0u8; 32];
        write_hex(&mut out[..16], hi);
        write_hex(&mut out[16..], lo);
        Self(out)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether `bytes` is a valid request id: exactly 32 lowercase hex digits.
    pub fn is_valid(bytes: &[u8]) -> bool {
        bytes.len() == 32 && bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// The id as a header value whose clones share its bytes: the envelope puts one on the
    /// request and one on the response for a single allocation.
    pub(crate) fn to_header_value(self) -> HeaderValue {
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(self.0))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    pub(crate) fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        Self::is_valid(bytes).then(|| {
            let mut out = [0u8; 32];
            out.copy_from_slice(bytes);
            Self(out)
        })
    }
}

/// SplitMix64's finaliser: a bijection on `u64`, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write_hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// The error of parsing a [`RequestId`] from text that is not 32 lowercase hex digits.
///
/// ```
/// use tower_maas::{InvalidRequestId, RequestId};
///
/// assert_eq!("ABC".parse::<RequestId>().err(), Some(InvalidRequestId));
/// assert!("0123456789abcdef0123456789abcdef".parse::<RequestId>().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidRequestId;

impl fmt::Display for InvalidRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request id is 32 lowercase hexadecimal digits")
    }
}

impl std::error::Error for InvalidRequestId {}

impl FromStr for RequestId {
    type Err = InvalidRequestId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_header(&HeaderValue::from_str(s).map_err(|_| InvalidRequestId)?)
            .ok_or(InvalidRequestId)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

/// The next number of the process-wide count, never given twice. Each thread takes the count a
/// block at a time: one write to the shared counter per [`BLOCK`] ids rather than one per id,
/// a cache line that every core serving requests would otherwise pass back and forth.
fn next_count() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// This thread's block: the next number and the end.
        static BLOCK_LEFT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    BLOCK_LEFT.with(|left| {
        let (mut next, mut end) = left.get();
        if next == end {
            next = COUNTER.fetch_add(BLOCK, Ordering::Relaxed);
            end = next + BLOCK;
        }
        left.set((next + 1, end));
        next
    })
}

/// Ids a thread takes from the shared count at a time.
const BLOCK: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let ids: HashSet<RequestId> = (0..10_000).map(|_| RequestId::generate()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| RequestId::is_valid(id.as_str().as_bytes()))
        );
    }

    #[test]
    fn ids_from_many_threads_are_distinct() {
        // More than a block each, so that every thread takes a second one.
        let per_thread = BLOCK as usize * 2 + 10;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| RequestId::generate())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: HashSet<RequestId> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 4 * per_thread);
    }

    #[test]
    fn parsing_accepts_only_32_lowercase_hex() {
        let good = "0123456789abcdef0123456789abcdef";
        assert_eq!(good.parse::<RequestId>().unwrap().as_str(), good);
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef 123456789abcdef",
        ] {
            assert_eq!(bad.parse::<RequestId>(), Err(InvalidRequestId), "{bad:?}");
        }
    }
}
