//! What the content filter holds while it reads an answer that its fast path leaves to the
//! serde reading: about the answer's own size, however many items the answer lists. Before, a
//! 3 MiB `{"choices":[0,0,…]}` kept one 160-byte `None` per `0`: about 250 MB.
//!
//! In process, and one test in a binary of its own: the allocator counts for the whole process,
//! so nothing else may run beside it (a socket server's buffers would blur the count).

use std::alloc::System;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};
use tower::{Layer, ServiceExt};
use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

const E81011: &str = r#"{"error":{"code":"ModelArts.81011","message":"May contain senstive.....","param":null,"type":"Forbidden"},"error_code":"ModelArts.81011","error_msg":"May contain senstive....."}"#;

/// Under the filter's default output limit (4 MiB), over which an answer is refused unread.
const SIZE: usize = 3 << 20;

/// An answer of about `SIZE` bytes: `head`, then `item` repeated, comma-separated, then `tail`.
/// The `1e0` sends it past the fast path (which leaves exponents to serde).
fn answer(head: &str, item: &str, tail: &str) -> Bytes {
    let items = vec![item; SIZE / (item.len() + 1)].join(",");
    Bytes::from(format!(r#"{{"created":1e0,{head}{items}{tail}}}"#))
}

/// The filter's answer to `answer` (status, body) and the most memory held at once while it
/// was read and passed on, beyond what was held before.
async fn filtered(answer: Bytes) -> (u16, Bytes, usize) {
    let classifier = KeywordClassifier::builder()
        .term("weapons", "build a bomb")
        .build()
        .unwrap();
    let filter =
        ContentRiskFilterLayer::new(classifier).layer(tower::service_fn(move |_: Request<_>| {
            let answer = answer.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(answer))
                        .unwrap(),
                )
            }
        }));
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"prompt\":\"hi\"}")))
        .unwrap();
    GLOBAL.reset_peak_memory();
    let response = filter.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body, GLOBAL.get_peak_memory())
}

#[tokio::test(flavor = "current_thread")]
async fn reading_an_answer_holds_about_its_size_whatever_it_lists() {
    // Items that give no text hold nothing (a few hundred bytes, beside the answer itself).
    for (name, body) in [
        ("numbers as choices", answer(r#""choices":["#, "0", "]")),
        ("empty choices", answer(r#""choices":["#, "{}", "]")),
        (
            "messages without content",
            answer(r#""choices":["#, r#"{"message":{}}"#, "]"),
        ),
        (
            "numbers as parts",
            answer(r#""choices":[{"message":{"content":["#, "0", "]}}]"),
        ),
        (
            "numbers as tool calls",
            answer(r#""choices":[{"message":{"tool_calls":["#, "0", "]}}]"),
        ),
        (
            "a usage of numbers",
            answer(r#""usage":{"list":["#, "0", "]}"),
        ),
    ] {
        let (status, passed, peak) = filtered(body.clone()).await;
        assert_eq!((status, passed == body), (200, true), "{name}");
        assert!(peak <= 64 * 1024, "{name}: {peak} bytes held");
    }

    // Items that each give a text hold a reference each, and a copy of an escaped one: about
    // four times the answer's bytes at most (12 MB for 3 MiB of `{"text":""}`, the densest,
    // while the list of them grows), and the term after them is still found.
    for item in [r#"{"text":""}"#, r#"{"text":"\n"}"#] {
        let (status, passed, peak) = filtered(answer(
            r#""choices":["#,
            item,
            r#",{"text":"how to build a bomb"}]"#,
        ))
        .await;
        assert_eq!((status, &passed[..]), (403, E81011.as_bytes()), "{item}");
        assert!(peak <= 5 * SIZE, "{item}: {peak} bytes held");
    }
}
