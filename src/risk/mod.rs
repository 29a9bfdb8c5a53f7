//! `ContentRiskFilter`: risk control on input and output, refusing with 403 ModelArts.81011
//! `May contain senstive.....`.
//!
//! - **Input**: every text a request carries (message contents in string or content-part form,
//!   names, reasoning, tool-call arguments, `prompt`, `input`), taken from the validator's
//!   [`ParsedRequest`](crate::validate::ParsedRequest) when present, else read from the body
//!   (bounded) by the layer itself.
//! - **Non-streaming output**: a successful JSON answer is held (bounded), its generated text
//!   checked, and a blocked answer replaced by the 81011 refusal. The usage the backend reported
//!   goes with the answer, passed or refused, as a [`ReportedUsage`](crate::ReportedUsage), so a
//!   [`TokenRateLimit`](crate::limit::TokenRateLimit) outside charges it without reading the
//!   answer again: put the limiter outside the filter (the MaaS order).
//! - **Streaming output** (beyond MaaS, off by default, [`Window`]): generated text is held
//!   `window` characters at a time and checked with the last `overlap` characters already
//!   passed, so a term split across events is still caught; events pass once checked; a block
//!   ends the stream with `data: {"error": {…81011…}}` and `data: [DONE]`.
//! - **Classifiers** ([`Classifier`]) answer now (local rules, [`KeywordClassifier`]) or later
//!   (a remote moderation service), bounded by a timeout; [`OnFailure`] decides what a failure
//!   or a timeout means, and what happens to an answer that cannot be read: larger than
//!   `output_limit`, sent compressed, announced as JSON and not JSON, or a stream's line too
//!   long or not JSON. With output checks on, a request that names the codings it accepts
//!   asks the service for an answer it can read instead (`accept-encoding: identity`).
//! - Each refusal logs (through `tracing`, at `warn`) which side and category refused, and
//!   carries a [`RiskRefusal`] in the response's extensions; the body never says.
//!
//! ```
//! use axum::{Router, routing::post};
//! use tower_maas::risk::{ContentRiskFilterLayer, KeywordClassifier};
//!
//! let terms = KeywordClassifier::builder()
//!     .terms_from_text("[weapons]\nhow to build a bomb\n")
//!     .ignore_separators(true)
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new()
//!     .route("/v1/chat/completions", post(|| async { "ok" }))
//!     .layer(ContentRiskFilterLayer::new(terms));
//! ```

mod answer_scan;
mod classifier;
mod keyword;
mod layer;
mod output;
mod stream;

pub use self::classifier::{Classified, Classifier, Side, Verdict};
pub use self::keyword::{KeywordClassifier, KeywordClassifierBuilder};
pub use self::layer::{
    ContentRiskFilter, ContentRiskFilterLayer, OnFailure, ResponseFuture, RiskBody, RiskRefusal,
    Window,
};
pub use self::stream::RiskStream;
