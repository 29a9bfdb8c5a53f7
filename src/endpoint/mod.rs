//! Custom endpoints (seed 003): named access points for a model service, each with its own RPM
//! and TPM, managed through MaaS's management API and callable for inference.
//!
//! - [`EndpointRegistry`] keeps them: [`InMemoryRegistry`], or [`FileRegistry`] which survives
//!   a restart. Names are unique forever: a deleted endpoint's name stays taken (6271).
//! - [`ManagementApi`] serves the routes (on Tokio's blocking threads, since a durable registry
//!   waits for the disk) under
//!   `/v1/{project_id}/maas/services/custom-endpoint/endpoint`, authorised by a management
//!   token (`X-Auth-Token`, see [`ManagementAccess`]) that is not an inference key.
//! - **Inference by name**: a request whose `model` is an endpoint's name is served by the
//!   endpoint's model. Give the registry to [`ModelCatalog::endpoints`] and the validator puts
//!   an [`EndpointRoute`](crate::EndpointRoute) into the request; a
//!   [`TokenRateLimit`](crate::limit::TokenRateLimit) scoped to
//!   [`LimitScope::Endpoint`](crate::limit::LimitScope::Endpoint), stacked inside the key's,
//!   applies the endpoint's RPM and TPM on top of the key's (a refusal by the endpoint's limit
//!   gives the key's slot back). A key restricted to some models must list the endpoint's
//!   name, as it would a model's.
//!
//! # Routes
//!
//! | method | path | success |
//! |---|---|---|
//! | `POST` | `…/endpoint` | 200, the endpoint |
//! | `GET` | `…/endpoint` | 200, `{"total","count","items","quantity_limit"}` |
//! | `GET` | `…/endpoint/{custom_endpoint_id}` | 200, the endpoint |
//! | `PUT` | `…/endpoint/{custom_endpoint_id}` | 200, the endpoint |
//! | `DELETE` | `…/endpoint/{custom_endpoint_id}` | 204, no body |
//!
//! An endpoint is shown as [`CustomEndpoint::view`] describes. `total` counts the account's
//! endpoints in all its projects, `count` those listed (a string, as MaaS documents it),
//! `quantity_limit` is the account's quota. The create body takes `endpoint_name` (required),
//! `infer_service_id` (required: a service of the [`ServiceDirectory`]), `remark` (up to 256
//! characters), `rpm` and `tpm` (positive integers, or `null` for none); the edit body takes the
//! same but `infer_service_id` (the service cannot change), each optional, `null` removing a
//! limit. Unknown fields are ignored.
//!
//! # Checks, in order
//!
//! 1. a path that is none of the routes → 404 APIG.0101;
//! 2. no `X-Auth-Token`, or one that is no management token → 401 ModelArts.8503;
//! 3. `project_id`, then `custom_endpoint_id` (percent-decoded), failing the
//!    [security check](passes_security_check) → 400 ModelArts.6298 naming the parameter;
//! 4. a project the token's account does not manage → 401 ModelArts.8503;
//! 5. a method the route does not take → 405 with `allow` (so `POST` on `…/endpoint/` is 405);
//!    `PUT`/`DELETE` without an id, or with an empty one → 400 ModelArts.6299;
//! 6. a body over 64 KiB → 413; not a JSON object, a field of the wrong type, a remark over 256
//!    characters, an RPM/TPM that is not a positive integer → 400 ModelArts.2115;
//! 7. `endpoint_name`, `infer_service_id`, `remark`, in that order, failing the security check
//!    → 6298;
//! 8. create without `endpoint_name` (absent or `null`) → ModelArts.0104;
//! 9. a name breaking [the rule](is_valid_name) → ModelArts.6274; the name of a model the
//!    gateway serves, which could never be called as an endpoint's → 6271;
//! 10. create without `infer_service_id` → 2115; a service that is unknown, or neither mounted
//!     to the gateway nor without authentication → ModelArts.6613;
//! 11. the registry: unknown id (or another project's) → 6291, name used before → 6271, the
//!     account's quota of live endpoints reached, or its 1000 names over its lifetime used →
//!     6297.
//!
//! Endpoints belong to an account for management; for inference any key that may call the
//! endpoint's name (every key, unless restricted to some models) may use it, and its calls
//! count against the endpoint's own limits as well as the key's.
//!
//! ```
//! use std::sync::Arc;
//! use axum::Router;
//! use tower_maas::endpoint::{
//!     Account, InMemoryRegistry, MANAGEMENT_ROUTES, ManagementAccess, ManagementApi,
//!     ServiceAccess, ServiceDirectory,
//! };
//! use tower_maas::validate::ModelCatalog;
//!
//! let registry = Arc::new(InMemoryRegistry::new());
//! let api = ManagementApi::new(
//!     Arc::clone(&registry),
//!     ManagementAccess::new().token("mgmt-demo-token", Account::new("acme")),
//!     ServiceDirectory::new().service("svc-deepseek", "DeepSeek-V3", ServiceAccess::MaasGateway),
//! );
//! let app: Router = MANAGEMENT_ROUTES
//!     .iter()
//!     .fold(Router::new(), |app, route| app.route_service(route, api.clone()));
//! // The validator's catalog resolves endpoint names to their models.
//! let catalog = ModelCatalog::new().model("DeepSeek-V3", 65_536).endpoints(registry);
//! # let _ = (app, catalog);
//! ```
//!
//! [`ModelCatalog::endpoints`]: crate::validate::ModelCatalog::endpoints

mod access;
mod api;
mod file;
mod ledger;
mod record;
mod registry;
mod rules;

pub use self::access::{
    Account, DEFAULT_ENDPOINT_QUOTA, ManagementAccess, OnlineService, ServiceAccess,
    ServiceDirectory,
};
pub use self::api::{
    AUTH_TOKEN, ENDPOINT_ROUTE, ENDPOINTS_ROUTE, MANAGEMENT_BODY_LIMIT, MANAGEMENT_ROUTES,
    ManagementApi, ManagementFuture,
};
pub use self::file::FileRegistry;
pub use self::record::{
    CustomEndpoint, EndpointChange, EndpointError, EndpointView, LimitChange, NewEndpoint, Owner,
};
pub use self::registry::{EndpointRegistry, InMemoryRegistry};
pub use self::rules::{REFUSED_CHARACTERS, is_valid_name, passes_security_check};
