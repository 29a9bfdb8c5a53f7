#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[macro_use]
mod macros;

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
mod body;
#[cfg(any(feature = "auth", feature = "validate"))]
mod buffered;
#[cfg(feature = "endpoints")]
#[cfg_attr(docsrs, doc(cfg(feature = "endpoints")))]
pub mod endpoint;
pub mod envelope;
mod envelope_body;
pub mod error;
#[cfg(feature = "validate")]
mod json_text;
#[cfg(feature = "limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
pub mod limit;
mod model;
mod request_id;
#[cfg(feature = "risk")]
#[cfg_attr(docsrs, doc(cfg(feature = "risk")))]
pub mod risk;
#[cfg(all(feature = "builder", feature = "limit", feature = "risk"))]
#[cfg_attr(docsrs, doc(cfg(feature = "builder")))]
pub mod stack;
#[cfg(feature = "validate")]
#[cfg_attr(docsrs, doc(cfg(feature = "validate")))]
pub mod validate;

#[cfg(feature = "auth")]
pub use crate::auth::{BearerAuth, BearerAuthLayer};
pub use crate::body::{BoxError, DEFAULT_BODY_LIMIT, MaasBody};
pub use crate::envelope::{BackendTimeout, ErrorEnvelope, ErrorEnvelopeLayer, is_timeout};
pub use crate::error::{Dialect, GrpcCode, MaasError, Party, ThrottleWindow};
pub use crate::model::{EndpointResolver, EndpointRoute, ReportedUsage, RequestedModel};
pub use crate::request_id::{InvalidRequestId, REQUEST_ID, RequestId};
#[cfg(feature = "validate")]
pub use crate::validate::{RequestSchemaValidator, RequestSchemaValidatorLayer};
