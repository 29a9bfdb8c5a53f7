//! The five layers the whole-stack benchmarks measure, in MaaS order, around a given service.

/// The key the stack's key store holds, with limits no benchmark reaches.
pub(crate) const KEY: &str = "sk-stack-000000000000000000000000";

/// ErrorEnvelope, BearerAuth, RequestSchemaValidator (one model), TokenRateLimit (RPM and TPM,
/// headers on) and ContentRiskFilter (two terms) around `$inner`. A macro, so that the
/// layered type need not be written out.
macro_rules! five_layers {
    ($inner:expr) => {{
        use tower::Layer as _;
        let keys = std::sync::Arc::new(tower_maas::auth::InMemoryKeyStore::new());
        keys.insert(
            five_layers::KEY,
            tower_maas::auth::KeyPolicy::new().rpm(1 << 40).tpm(1 << 40),
        )
        .unwrap();
        let terms = tower_maas::risk::KeywordClassifier::builder()
            .terms_from_text("forbidden phrase one\nforbidden phrase two\n")
            .build()
            .unwrap();
        tower_maas::ErrorEnvelopeLayer::new().layer(
            tower_maas::auth::BearerAuthLayer::new(keys).layer(
                tower_maas::validate::RequestSchemaValidatorLayer::new()
                    .models(tower_maas::validate::ModelCatalog::new().model("DeepSeek-V3", 1 << 20))
                    .layer(
                        tower_maas::limit::TokenRateLimitLayer::new().layer(
                            tower_maas::risk::ContentRiskFilterLayer::new(terms).layer($inner),
                        ),
                    ),
            ),
        )
    }};
}
