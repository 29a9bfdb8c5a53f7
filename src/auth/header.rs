//! Reading the key out of `Authorization: Bearer <key>`.
//!
//! The decided answers (the seed says only "empty or lacks the Bearer prefix" → 81002 and
//! "parsing the API key failed" → 81003):
//!
//! | header | answer |
//! |---|---|
//! | absent, empty, or only whitespace | 81002 |
//! | two or more `Authorization` headers | 81002 (which one counts is ambiguous) |
//! | a scheme other than Bearer (`Basic …`, a bare `sk-…`) | 81002 |
//! | `Bearer` with no token | 81002 |
//! | `bearer KEY`, `BEARER KEY` | accepted: the scheme is case-insensitive (RFC 9110 §11.1), as OpenAI's API also accepts |
//! | `Bearer   KEY` (several spaces) | accepted (RFC 6750: `1*SP`) |
//! | a token with a byte outside RFC 6750's `b64token` (spaces, obs-text, non-UTF-8, controls) | 81003 |
//! | a token over [`MAX_KEY_LEN`] bytes (an 8 KiB token, say) | 81003, without hashing it |
//! | a well-formed key the store does not know | 81003 |

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::error::MaasError;

/// The longest key accepted, in bytes. Real keys are well under it; longer tokens are refused
/// before they are hashed.
pub const MAX_KEY_LEN: usize = 1024;

/// The key of a `Bearer` `Authorization` header, or the refusal for the header.
pub(crate) fn bearer_key(headers: &HeaderMap) -> Result<&[u8], MaasError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(MaasError::MissingAuthorization);
    };
    let value = value.as_bytes().trim_ascii();
    let (scheme, rest) = value.split_at(value.len().min(6));
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return Err(MaasError::MissingAuthorization);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(MaasError::MissingAuthorization);
    }
    if token.len() > MAX_KEY_LEN || !is_b64token(token) {
        return Err(MaasError::InvalidAuthorization);
    }
    Ok(token)
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &[u8]) -> bool {
    let body_len = token.len() - token.iter().rev().take_while(|&&b| b == b'=').count();
    body_len > 0
        && token[..body_len].iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Result<Vec<u8>, MaasError> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        bearer_key(&headers).map(<[u8]>::to_vec)
    }

    #[test]
    fn decided_answers() {
        use MaasError::{InvalidAuthorization as E81003, MissingAuthorization as E81002};
        assert_eq!(parse(&[]), Err(E81002));
        assert_eq!(parse(&[b""]), Err(E81002));
        assert_eq!(parse(&[b"   "]), Err(E81002));
        assert_eq!(parse(&[b"Bearer"]), Err(E81002));
        assert_eq!(parse(&[b"Bearer   "]), Err(E81002));
        assert_eq!(parse(&[b"Bearerabc"]), Err(E81002));
        assert_eq!(parse(&[b"Basic abc"]), Err(E81002));
        assert_eq!(parse(&[b"sk-abc"]), Err(E81002));
        assert_eq!(parse(&[b"Bearer a", b"Bearer a"]), Err(E81002));
        assert_eq!(parse(&[b"Bearer a b"]), Err(E81003));
        assert_eq!(parse(&[b"Bearer \xff\xfe"]), Err(E81003));
        assert_eq!(parse(&[b"Bearer ="]), Err(E81003));
        assert_eq!(parse(&[b"Bearer a=b"]), Err(E81003));
        let long = [b"Bearer ".as_slice(), &[b'a'; MAX_KEY_LEN + 1]].concat();
        assert_eq!(parse(&[&long]), Err(E81003));
        let max = [b"Bearer ".as_slice(), &[b'a'; MAX_KEY_LEN]].concat();
        assert_eq!(parse(&[&max]).unwrap().len(), MAX_KEY_LEN);
        assert_eq!(
            parse(&[b"Bearer sk-A.b_c~d+e/f=="]).unwrap(),
            b"sk-A.b_c~d+e/f=="
        );
        assert_eq!(parse(&[b"bearer abc"]).unwrap(), b"abc");
        assert_eq!(parse(&[b"BEARER   abc  "]).unwrap(), b"abc");
    }
}
