//! Golden tests: every case in `tests/fixtures/validation_golden.json` (generated from the real
//! FastAPI 0.111 + pydantic 2.8 reference by `tools/validation_fixtures/generate.py`) is sent
//! over a real socket to an axum app behind the validator, and the status and the whole body
//! must match byte for byte.

mod common;

use axum::Router;
use axum::routing::post;
use common::{send, serve_axum};
use http::Request;
use serde::Deserialize;
use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer, ValidationDialect};

#[derive(Deserialize)]
struct Case {
    name: String,
    path: String,
    content_type: Option<String>,
    body_hex: String,
    status: u16,
    response: Option<String>,
}

/// Where the reference crashes with a 500 (Starlette cannot encode NaN or a lone surrogate as
/// JSON), the crate sends what the reference had decided: acceptance, or for an unknown model
/// with a lone surrogate the 404, with U+FFFD in the surrogate's place.
fn instead_of_the_references_crash(name: &str) -> (u16, Option<&'static str>) {
    match name {
        "utf8_encoded_surrogate_model_404" => (
            404,
            Some(
                "{\"object\":\"error\",\"message\":\"The model `a\u{fffd}b` does not exist.\",\"type\":\"NotFoundError\",\"param\":null,\"code\":404}",
            ),
        ),
        _ => (200, None),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn every_golden_case_matches_the_reference_byte_for_byte() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("fixtures/validation_golden.json")).unwrap();
    assert!(cases.len() >= 40 + 6);
    // The reference knows these models and checks no context length.
    let catalog = [
        "DeepSeek-V3",
        "DeepSeek-R1",
        "Qwen2.5-72B-32K",
        "mock-model",
    ]
    .into_iter()
    .fold(ModelCatalog::new(), |c, m| c.model(m, u64::MAX));
    let ok = || async { "accepted" };
    let app = Router::new()
        .route("/v1/chat/completions", post(ok))
        .route("/v1/completions", post(ok))
        .route("/v1/embeddings", post(ok))
        .layer(
            RequestSchemaValidatorLayer::new()
                .dialect(ValidationDialect::Backend)
                .models(catalog),
        );
    let addr = serve_axum(app).await;

    let mut failures = Vec::new();
    for case in &cases {
        let body = hex(&case.body_hex);
        let mut req = Request::post(&case.path).header("host", "localhost");
        if let Some(ct) = &case.content_type {
            req = req.header("content-type", ct);
        }
        let reply = send(addr, req.body(common::full(body)).unwrap()).await;
        let (status, expected) = match case.status {
            500 => instead_of_the_references_crash(&case.name),
            s => (s, case.response.as_deref()),
        };
        let got_body = String::from_utf8_lossy(&reply.body);
        let body_ok = match expected {
            Some(expected) => got_body == expected,
            None => got_body == "accepted",
        };
        if reply.status.as_u16() != status || !body_ok {
            failures.push(format!(
                "{}: expected {status} {}\n{:>width$}got      {} {got_body}",
                case.name,
                expected.unwrap_or("accepted"),
                "",
                reply.status.as_u16(),
                width = 0
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
