//! The MaaS error catalogue: one value per row of the seed tables, and its rendering.
//!
//! Every refusal any layer of this crate produces is a [`MaasError`]. It knows its HTTP status,
//! its code, its exact message (typos of the live service included, such as `senstive`), the
//! party that speaks it ([`Party`]) and so the shape of its body. No layer writes a status code
//! or a message string of its own.
//!
//! ```
//! use tower_maas::{Dialect, MaasError, RequestId};
//!
//! let id: RequestId = "0123456789abcdef0123456789abcdef".parse().unwrap();
//! let err = MaasError::RpmExceeded { rpm: 60 };
//! assert_eq!(err.status(), 429);
//! assert_eq!(
//!     err.render(Dialect::Dual, &id),
//!     r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 60 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 60 times per minute."}"#,
//! );
//! ```

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::request_id::{REQUEST_ID, RequestId};

/// Which party of the MaaS request path speaks an error, and so which body shape it has.
///
/// A MaaS request crosses the API gateway (APIG), the MaaS gateway, and the model backend (a vLLM
/// OpenAI server under FastAPI); the management API of custom endpoints is a fourth speaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Party {
    /// The API gateway in front: `{"error_msg","error_code","request_id"}`.
    Apig,
    /// The MaaS gateway (auth, limits, risk, routing): the dual body of [`Dialect::Dual`].
    Gateway,
    /// The model backend (vLLM): `{"object":"error","message","type","param","code"}`.
    Backend,
    /// The web framework under the backend (FastAPI): `{"detail":"…"}`.
    Framework,
    /// The custom-endpoint management API: `{"error_code","error_msg"}`.
    Management,
}

/// How refusals of the gateway parties ([`Party::Gateway`], and with [`Dialect::OpenAi`] also
/// [`Party::Apig`]) are written.
///
/// Backend, framework and management errors always keep their own shape: they are what the vLLM
/// server, FastAPI and the management API say, and clients of those parse them as they are.
///
/// | party | `Dual` (default) | `Flat` | `OpenAi` |
/// |---|---|---|---|
/// | APIG | `{"error_msg","error_code","request_id"}` | same | `{"error":{…}}` |
/// | MaaS gateway | `{"error":{…},"error_code","error_msg"}` | `{"error_code","error_msg"}` | `{"error":{…}}` |
/// | backend | `{"object":"error",…}` | same | same |
/// | framework | `{"detail":…}` | same | same |
/// | management | `{"error_code","error_msg"}` | same | same |
///
/// ```
/// use tower_maas::{Dialect, ErrorEnvelopeLayer};
///
/// // For OpenAI SDK clients alone: `{"error":{…}}`, APIG's refusals too.
/// let layer = ErrorEnvelopeLayer::new().dialect(Dialect::OpenAi);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// What the live MaaS service sends: OpenAI's `error` object for SDKs and Huawei's
    /// `error_code`/`error_msg` for Huawei clients, side by side.
    #[default]
    Dual,
    /// Huawei's flat `{"error_code","error_msg"}` only.
    Flat,
    /// OpenAI's `{"error":{"code","message","param","type"}}` only, for APIG errors too.
    OpenAi,
}

/// The window of an APIG per-IP throttling policy: so many seconds, minutes, hours or days (the
/// units of APIG's policies), written in the APIG.0308 message as the policy has it, the unit
/// in the singular: `time:1 minute`, `time:10 second`. A count of 0 counts as 1, in the
/// message and the limit alike (though `Seconds(0) != Seconds(1)`).
///
/// ```
/// use tower_maas::{MaasError, ThrottleWindow};
///
/// let refusal = MaasError::IpThrottled { limit: 100, window: ThrottleWindow::Seconds(10) };
/// assert_eq!(
///     refusal.message(),
///     "The throttling threshold has been reached: policy ip over ratelimit,limit:100,time:10 second"
/// );
/// assert_eq!(ThrottleWindow::MINUTE.nanos(), 60_000_000_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleWindow {
    /// `time:N second`
    Seconds(u32),
    /// `time:N minute`
    Minutes(u32),
    /// `time:N hour`
    Hours(u32),
    /// `time:N day`
    Days(u32),
}

impl ThrottleWindow {
    /// `time:1 second`: `Seconds(1)`.
    ///
    /// ```
    /// use tower_maas::ThrottleWindow;
    ///
    /// assert_eq!(ThrottleWindow::SECOND.to_string(), "1 second");
    /// ```
    pub const SECOND: Self = Self::Seconds(1);
    /// `time:1 minute`: `Minutes(1)`, the window the spec's example shows.
    ///
    /// ```
    /// use tower_maas::ThrottleWindow;
    ///
    /// assert_eq!(ThrottleWindow::MINUTE, ThrottleWindow::Minutes(1));
    /// ```
    pub const MINUTE: Self = Self::Minutes(1);

    /// The count (at least 1), the unit's name and its length in seconds.
    fn parts(self) -> (u32, &'static str, u64) {
        let (count, unit, seconds) = match self {
            Self::Seconds(n) => (n, "second", 1),
            Self::Minutes(n) => (n, "minute", 60),
            Self::Hours(n) => (n, "hour", 3_600),
            Self::Days(n) => (n, "day", 86_400),
        };
        (count.max(1), unit, seconds)
    }

    /// How long the window is, in nanoseconds: at most a quarter of `u64::MAX` (about 146
    /// years), so that a limiter's arithmetic on it cannot overflow; a longer window is taken
    /// as that.
    ///
    /// ```
    /// use tower_maas::ThrottleWindow;
    ///
    /// assert_eq!(ThrottleWindow::Seconds(10).nanos(), 10_000_000_000);
    /// assert_eq!(ThrottleWindow::Days(u32::MAX).nanos(), u64::MAX / 4);
    /// ```
    pub fn nanos(self) -> u64 {
        let (count, _, seconds) = self.parts();
        u64::from(count)
            .saturating_mul(seconds * 1_000_000_000)
            .min(u64::MAX / 4)
    }
}

impl fmt::Display for ThrottleWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, unit, _) = self.parts();
        write!(f, "{count} {unit}")
    }
}

/// One row of the MaaS error catalogue, with its parameters.
///
/// The variant names follow the trigger; [`MaasError::code`], [`MaasError::status`] and
/// [`MaasError::message`] give the protocol values. The README's catalogue table lists every row
/// with the layer that produces it.
///
/// A refusal travels as `Ok(response)` with the `MaasError` in the response's extensions, so an
/// outer [`ErrorEnvelope`](crate::ErrorEnvelope) can re-render it in another [`Dialect`].
///
/// ```
/// use tower_maas::MaasError;
///
/// let error = MaasError::RpmExceeded { rpm: 60 };
/// assert_eq!(error.status(), 429);
/// assert_eq!(error.code(), Some("ModelArts.81101"));
/// assert_eq!(
///     error.message(),
///     "Too many requests, exceeded rate limit is 60 times per minute."
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaasError {
    /// 400 `ModelArts.81001` `Invalid request body.`: the gateway cannot use the body (not JSON,
    /// empty model parameter).
    InvalidRequestBody,
    /// 400 `ModelArts.81002` `Failed to get the authorization header.`
    MissingAuthorization,
    /// 401 `ModelArts.81003` `Invalid authorization header.`: the key is malformed or unknown.
    InvalidAuthorization,
    /// 401 `ModelArts.81004` `Invalid request because you do not have access to it.`: the model is
    /// not enabled for this key.
    ModelNotEnabled,
    /// 401 `ModelArts.81005` `The free quota has been used up.`
    QuotaExhausted,
    /// 401 `ModelArts.81006` `The resource is frozen.`
    ResourceFrozen,
    /// 401 `ModelArts.81109` `No permission query task %s`: another key's video-generation task.
    VideoTaskForbidden {
        /// The task id that was queried.
        task_id: String,
    },
    /// 403 `ModelArts.81109` `No permission query task %s`: another key's task of another kind.
    TaskForbidden {
        /// The task id that was queried.
        task_id: String,
    },
    /// 403 `ModelArts.81011` `May contain senstive.....`: input or non-streaming output risk control.
    SensitiveContent,
    /// 404 `ModelArts.81009` `Invalid model.`: the gateway does not know the model.
    InvalidModel,
    /// 404 `ModelArts.81108` `Task %s does not exist`
    TaskNotFound {
        /// The task id that was queried.
        task_id: String,
    },
    /// 429 `ModelArts.81101` `Too many requests, exceeded rate limit is {rpm} times per minute.`
    RpmExceeded {
        /// The key's requests-per-minute limit.
        rpm: u64,
    },
    /// 429 `ModelArts.81103` `Too many requests. exceeded rate limit is %s tokens per minute.`
    TpmExceeded {
        /// The key's tokens-per-minute limit.
        tpm: u64,
    },
    /// 400 `ModelArts.81103`: the request's token reservation is larger than the whole
    /// tokens-per-minute bucket, so it could never be admitted. Not in the seeds: a clear refusal
    /// instead of a 429 that no wait would cure.
    TokensOverLimit {
        /// Tokens the request needs (prompt plus `max_tokens`).
        tokens: u64,
        /// The key's tokens-per-minute limit.
        tpm: u64,
    },
    /// 404 `APIG.0101` `The API does not exist or has not been published in the environment`
    ApiNotFound,
    /// 504 `APIG.0203` `Backend timeout`
    BackendTimeout,
    /// 502 `APIG.0201` `Backend unavailable.`: the upstream refused the connection.
    BackendUnavailable,
    /// 413 `APIG.0201` `Request entity too large.`: the body is over the size limit.
    EntityTooLarge,
    /// 429 `APIG.0308` `The throttling threshold has been reached: policy ip over
    /// ratelimit,limit:{limit},time:{window}` (`1 minute`, `10 second`)
    IpThrottled {
        /// Requests allowed per window.
        limit: u64,
        /// The window of the policy.
        window: ThrottleWindow,
    },
    /// 500 `APIG.0201` `Internal server error.`: the service failed; nothing of the failure is
    /// shown. Not in the seeds: the code is the one APIG uses for its own request failures.
    Internal,
    /// 405 `{"detail":"Method Not Allowed"}`: the route exists, the method does not. FastAPI
    /// also sends an `allow` header naming the route's methods, which only the route knows:
    /// [`to_response`](MaasError::to_response) leaves it to the caller, and
    /// [`ErrorEnvelope`](crate::ErrorEnvelope) keeps the one a router's own 405 carries.
    ///
    /// ```
    /// use http::header::{ALLOW, HeaderValue};
    /// use tower_maas::{Dialect, MaasError, RequestId};
    ///
    /// let mut res = MaasError::MethodNotAllowed.to_response(Dialect::Dual, &RequestId::generate());
    /// res.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
    /// assert_eq!((res.status().as_u16(), res.headers()[ALLOW].as_bytes()), (405, &b"POST"[..]));
    /// ```
    MethodNotAllowed,
    /// 400 backend `BadRequestError` with a pydantic validation message (the Python `str()` of
    /// the error list), already formatted.
    Validation {
        /// The message, byte for byte.
        message: String,
    },
    /// 400 backend `BadRequestError`: prompt and completion exceed the model's context length.
    ContextLengthExceeded {
        /// The model's maximum context length in tokens.
        max: u64,
        /// Tokens in the messages (the prompt).
        prompt: u64,
        /// Tokens asked for the completion (`max_tokens`, which Python reads at any size);
        /// `None` selects vLLM's wording for a prompt that alone is too long.
        completion: Option<u128>,
    },
    /// 400 backend `BadRequestError`: an embeddings input exceeds the model's context length.
    EmbeddingContextLengthExceeded {
        /// The model's maximum context length in tokens.
        max: u64,
        /// Tokens in the input.
        input: u64,
    },
    /// 400 `{"detail":"There was an error parsing the body"}`: FastAPI could not read the body
    /// at all (not UTF-8/16/32, nested too deep, an integer of over 4300 digits).
    UnparsableBody,
    /// 404 backend `NotFoundError` ``The model `{model}` does not exist.``
    BackendModelNotFound {
        /// The model named in the request.
        model: String,
    },
    /// 400 `ModelArts.0104` `CreateCustomEndpointReq.endpoint_name is a required field`
    EndpointNameRequired,
    /// 400 `ModelArts.6271`: the endpoint name was used before (deleted endpoints included).
    EndpointNameUsed,
    /// 400 `ModelArts.6274`: the endpoint name is not 1–64 letters, digits, `.`, `_`, `-`
    /// starting with a letter.
    EndpointNameInvalid,
    /// 400 `ModelArts.6291` `CustomEndpointNotFound`
    EndpointNotFound,
    /// 400 `ModelArts.6297` `Custom endpoint number exceed quota`
    EndpointQuotaExceeded,
    /// 400 `ModelArts.6299` `Custom endpoint id is required`
    EndpointIdRequired,
    /// 400 `ModelArts.6613`: the target service is neither mounted to the MaaS gateway nor
    /// without authentication.
    ServiceNotMountable,
    /// 401 `ModelArts.8503` `No permission to create modelarts custom endpoints`
    NoManagementPermission,
    /// 400 `ModelArts.2115` `Invalid JSON request body`
    InvalidJsonBody,
    /// 400 `ModelArts.6298` `Parameter (%s) security check failed, please check for special
    /// characters.`
    SecurityCheckFailed {
        /// The name of the parameter that failed the check.
        param: String,
    },
}

impl MaasError {
    /// Whether this is a refusal for the key's state (81004, 81005, 81006), whose status later
    /// editions of MaaS moved from 401 to 403.
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn is_key_state(&self) -> bool {
        matches!(
            self,
            Self::ModelNotEnabled | Self::QuotaExhausted | Self::ResourceFrozen
        )
    }

    /// The HTTP status of this row as the seed gives it.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequestBody
            | Self::MissingAuthorization
            | Self::Validation { .. }
            | Self::ContextLengthExceeded { .. }
            | Self::EmbeddingContextLengthExceeded { .. }
            | Self::UnparsableBody
            | Self::TokensOverLimit { .. }
            | Self::EndpointNameRequired
            | Self::EndpointNameUsed
            | Self::EndpointNameInvalid
            | Self::EndpointNotFound
            | Self::EndpointQuotaExceeded
            | Self::EndpointIdRequired
            | Self::ServiceNotMountable
            | Self::InvalidJsonBody
            | Self::SecurityCheckFailed { .. } => StatusCode::BAD_REQUEST,
            Self::InvalidAuthorization
            | Self::ModelNotEnabled
            | Self::QuotaExhausted
            | Self::ResourceFrozen
            | Self::VideoTaskForbidden { .. }
            | Self::NoManagementPermission => StatusCode::UNAUTHORIZED,
            Self::TaskForbidden { .. } | Self::SensitiveContent => StatusCode::FORBIDDEN,
            Self::InvalidModel
            | Self::TaskNotFound { .. }
            | Self::ApiNotFound
            | Self::BackendModelNotFound { .. } => StatusCode::NOT_FOUND,
            Self::RpmExceeded { .. } | Self::TpmExceeded { .. } | Self::IpThrottled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::EntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BackendUnavailable => StatusCode::BAD_GATEWAY,
            Self::BackendTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The error code (`ModelArts.81101`, `APIG.0203`, …); `None` for backend and framework
    /// errors, which carry none.
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidRequestBody => "ModelArts.81001",
            Self::MissingAuthorization => "ModelArts.81002",
            Self::InvalidAuthorization => "ModelArts.81003",
            Self::ModelNotEnabled => "ModelArts.81004",
            Self::QuotaExhausted => "ModelArts.81005",
            Self::ResourceFrozen => "ModelArts.81006",
            Self::VideoTaskForbidden { .. } | Self::TaskForbidden { .. } => "ModelArts.81109",
            Self::SensitiveContent => "ModelArts.81011",
            Self::InvalidModel => "ModelArts.81009",
            Self::TaskNotFound { .. } => "ModelArts.81108",
            Self::RpmExceeded { .. } => "ModelArts.81101",
            Self::TpmExceeded { .. } | Self::TokensOverLimit { .. } => "ModelArts.81103",
            Self::ApiNotFound => "APIG.0101",
            Self::BackendTimeout => "APIG.0203",
            Self::BackendUnavailable | Self::EntityTooLarge | Self::Internal => "APIG.0201",
            Self::IpThrottled { .. } => "APIG.0308",
            Self::EndpointNameRequired => "ModelArts.0104",
            Self::EndpointNameUsed => "ModelArts.6271",
            Self::EndpointNameInvalid => "ModelArts.6274",
            Self::EndpointNotFound => "ModelArts.6291",
            Self::EndpointQuotaExceeded => "ModelArts.6297",
            Self::EndpointIdRequired => "ModelArts.6299",
            Self::ServiceNotMountable => "ModelArts.6613",
            Self::NoManagementPermission => "ModelArts.8503",
            Self::InvalidJsonBody => "ModelArts.2115",
            Self::SecurityCheckFailed { .. } => "ModelArts.6298",
            Self::MethodNotAllowed
            | Self::UnparsableBody
            | Self::Validation { .. }
            | Self::ContextLengthExceeded { .. }
            | Self::EmbeddingContextLengthExceeded { .. }
            | Self::BackendModelNotFound { .. } => return None,
        })
    }

    /// The party that speaks this error, which fixes the shape of its body.
    pub fn party(&self) -> Party {
        match self {
            Self::ApiNotFound
            | Self::BackendTimeout
            | Self::BackendUnavailable
            | Self::EntityTooLarge
            | Self::IpThrottled { .. }
            | Self::Internal => Party::Apig,
            Self::MethodNotAllowed | Self::UnparsableBody => Party::Framework,
            Self::Validation { .. }
            | Self::ContextLengthExceeded { .. }
            | Self::EmbeddingContextLengthExceeded { .. }
            | Self::BackendModelNotFound { .. } => Party::Backend,
            Self::EndpointNameRequired
            | Self::EndpointNameUsed
            | Self::EndpointNameInvalid
            | Self::EndpointNotFound
            | Self::EndpointQuotaExceeded
            | Self::EndpointIdRequired
            | Self::ServiceNotMountable
            | Self::NoManagementPermission
            | Self::InvalidJsonBody
            | Self::SecurityCheckFailed { .. } => Party::Management,
            _ => Party::Gateway,
        }
    }

    /// The message template exactly as the seed writes it, placeholders (`%s`, `{rpm}`) unfilled.
    pub fn template(&self) -> &'static str {
        match self {
            Self::InvalidRequestBody => "Invalid request body.",
            Self::MissingAuthorization => "Failed to get the authorization header.",
            Self::InvalidAuthorization => "Invalid authorization header.",
            Self::ModelNotEnabled => "Invalid request because you do not have access to it.",
            Self::QuotaExhausted => "The free quota has been used up.",
            Self::ResourceFrozen => "The resource is frozen.",
            Self::VideoTaskForbidden { .. } | Self::TaskForbidden { .. } => {
                "No permission query task %s"
            }
            Self::SensitiveContent => "May contain senstive.....",
            Self::InvalidModel => "Invalid model.",
            Self::TaskNotFound { .. } => "Task %s does not exist",
            Self::RpmExceeded { .. } => {
                "Too many requests, exceeded rate limit is {rpm} times per minute."
            }
            Self::TpmExceeded { .. } => {
                "Too many requests. exceeded rate limit is %s tokens per minute."
            }
            Self::TokensOverLimit { .. } => {
                "Too many tokens requested: %s tokens can never fit the rate limit of %s tokens per minute."
            }
            Self::ApiNotFound => {
                "The API does not exist or has not been published in the environment"
            }
            Self::BackendTimeout => "Backend timeout",
            Self::BackendUnavailable => "Backend unavailable.",
            Self::EntityTooLarge => "Request entity too large.",
            Self::IpThrottled { .. } => {
                "The throttling threshold has been reached: policy ip over ratelimit,limit:%s,time:%s"
            }
            Self::Internal => "Internal server error.",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::Validation { .. } => "%s",
            Self::ContextLengthExceeded {
                completion: Some(_),
                ..
            } => {
                "This model's maximum context length is %s tokens. However, you requested %s tokens (%s in the messages, %s in the completion). Please reduce the length of the messages or completion."
            }
            Self::ContextLengthExceeded {
                completion: None, ..
            } => {
                "This model's maximum context length is %s tokens. However, you requested %s tokens in the messages, Please reduce the length of the messages."
            }
            Self::EmbeddingContextLengthExceeded { .. } => {
                "This model's maximum context length is %s tokens. However, you requested %s tokens in the input for embedding generation. Please reduce the length of the input."
            }
            Self::UnparsableBody => "There was an error parsing the body",
            Self::BackendModelNotFound { .. } => "The model `%s` does not exist.",
            Self::EndpointNameRequired => {
                "CreateCustomEndpointReq.endpoint_name is a required field"
            }
            Self::EndpointNameUsed => {
                "Custom endpoint name has already been used (including deleted access points). To ensure billing uniqueness, please use a different name."
            }
            Self::EndpointNameInvalid => {
                "Custom endpoint name is invalid. Enter 1 to 64 characters, staring with a letter. Only letters, digits, point(.), underscores (_), and hyphens (-) are allowed"
            }
            Self::EndpointNotFound => "CustomEndpointNotFound",
            Self::EndpointQuotaExceeded => "Custom endpoint number exceed quota",
            Self::EndpointIdRequired => "Custom endpoint id is required",
            Self::ServiceNotMountable => {
                "Operation failed. The online service status needs to have the 'Mount to MAAS Gateway' switch turned on or the authentication method set to 'No Authentication' in order to create a custom custom endpoint."
            }
            Self::NoManagementPermission => "No permission to create modelarts custom endpoints",
            Self::InvalidJsonBody => "Invalid JSON request body",
            Self::SecurityCheckFailed { .. } => {
                "Parameter (%s) security check failed, please check for special characters."
            }
        }
    }

    /// The message with its parameters filled in, exactly as it goes on the wire.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            Self::VideoTaskForbidden { task_id } | Self::TaskForbidden { task_id } => {
                Cow::Owned(format!("No permission query task {task_id}"))
            }
            Self::TaskNotFound { task_id } => Cow::Owned(format!("Task {task_id} does not exist")),
            Self::RpmExceeded { rpm } => Cow::Owned(format!(
                "Too many requests, exceeded rate limit is {rpm} times per minute."
            )),
            Self::TpmExceeded { tpm } => Cow::Owned(format!(
                "Too many requests. exceeded rate limit is {tpm} tokens per minute."
            )),
            Self::TokensOverLimit { tokens, tpm } => Cow::Owned(format!(
                "Too many tokens requested: {tokens} tokens can never fit the rate limit of {tpm} tokens per minute."
            )),
            Self::IpThrottled { limit, window } => Cow::Owned(format!(
                "The throttling threshold has been reached: policy ip over ratelimit,limit:{limit},time:{window}"
            )),
            Self::Validation { message } => Cow::Borrowed(message),
            Self::ContextLengthExceeded {
                max,
                prompt,
                completion: Some(completion),
            } => Cow::Owned(format!(
                "This model's maximum context length is {max} tokens. However, you requested {} tokens ({prompt} in the messages, {completion} in the completion). Please reduce the length of the messages or completion.",
                u128::from(*prompt).saturating_add(*completion)
            )),
            Self::ContextLengthExceeded {
                max,
                prompt,
                completion: None,
            } => Cow::Owned(format!(
                "This model's maximum context length is {max} tokens. However, you requested {prompt} tokens in the messages, Please reduce the length of the messages."
            )),
            Self::EmbeddingContextLengthExceeded { max, input } => Cow::Owned(format!(
                "This model's maximum context length is {max} tokens. However, you requested {input} tokens in the input for embedding generation. Please reduce the length of the input."
            )),
            Self::BackendModelNotFound { model } => {
                Cow::Owned(format!("The model `{model}` does not exist."))
            }
            Self::SecurityCheckFailed { param } => Cow::Owned(format!(
                "Parameter ({param}) security check failed, please check for special characters."
            )),
            _ => Cow::Borrowed(self.template()),
        }
    }

    /// The body of this error in `dialect`, for a response with the seed's status.
    ///
    /// `request_id` appears in APIG bodies only.
    pub fn render(&self, dialect: Dialect, request_id: &RequestId) -> Bytes {
        self.render_with_status(self.status(), dialect, request_id)
    }

    /// The body for a response whose status a layer chose over the seed's (later editions of
    /// MaaS answer 81004/81005/81006 with 403); the `type` word follows the status.
    pub(crate) fn render_with_status(
        &self,
        status: StatusCode,
        dialect: Dialect,
        request_id: &RequestId,
    ) -> Bytes {
        let message = self.message();
        let code = self.code();
        let openai = |code| OpenAiError {
            code,
            message: &message,
            param: None,
            kind: type_word(status),
        };
        let body = match (self.party(), dialect) {
            (Party::Backend, _) => to_json(&BackendBody {
                object: "error",
                message: &message,
                kind: match status {
                    StatusCode::NOT_FOUND => "NotFoundError",
                    _ => "BadRequestError",
                },
                param: None,
                code: status.as_u16(),
            }),
            (Party::Framework, _) => to_json(&DetailBody { detail: &message }),
            (Party::Apig | Party::Gateway, Dialect::OpenAi) => to_json(&OpenAiBody {
                error: openai(code.unwrap_or_default()),
            }),
            (Party::Apig, _) => to_json(&ApigBody {
                error_msg: &message,
                error_code: code.unwrap_or_default(),
                request_id: request_id.as_str(),
            }),
            (Party::Gateway, Dialect::Dual) => {
                let code = code.unwrap_or_default();
                to_json(&DualBody {
                    error: openai(code),
                    error_code: code,
                    error_msg: &message,
                })
            }
            (Party::Gateway | Party::Management, _) => to_json(&FlatBody {
                error_code: code.unwrap_or_default(),
                error_msg: &message,
            }),
        };
        Bytes::from(body)
    }

    /// A complete refusal response in `dialect`: status, `content-type: application/json`,
    /// `content-length`, `x-request-id`, the body, and `self` in the response's extensions.
    ///
    /// ```
    /// use tower_maas::{Dialect, MaasError, RequestId};
    ///
    /// let res = MaasError::ApiNotFound.to_response(Dialect::Dual, &RequestId::generate());
    /// assert_eq!(res.status(), 404);
    /// assert_eq!(res.extensions().get::<MaasError>(), Some(&MaasError::ApiNotFound));
    /// ```
    pub fn to_response(&self, dialect: Dialect, request_id: &RequestId) -> Response<Full<Bytes>> {
        self.clone()
            .into_response_with_status(self.status(), dialect, request_id)
    }

    /// The response, taking the error into its extensions without a copy.
    pub(crate) fn into_response_with_status(
        self,
        status: StatusCode,
        dialect: Dialect,
        request_id: &RequestId,
    ) -> Response<Full<Bytes>> {
        let body = self.render_with_status(status, dialect, request_id);
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = status;
        set_json_headers(res.headers_mut(), body.len());
        res.headers_mut()
            .insert(REQUEST_ID, request_id.to_header_value());
        *res.body_mut() = Full::new(body);
        res.extensions_mut().insert(self);
        res
    }
}

/// A gRPC status code (`grpc-status`), as [`MaasError::grpc_code`] maps a refusal to one.
///
/// ```
/// use http::StatusCode;
/// use tower_maas::{GrpcCode, MaasError};
///
/// let code = MaasError::RpmExceeded { rpm: 60 }.grpc_code(StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(code, GrpcCode::ResourceExhausted);
/// assert_eq!(code as u8, 8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// 2 `UNKNOWN`
    Unknown = 2,
    /// 3 `INVALID_ARGUMENT`
    InvalidArgument = 3,
    /// 4 `DEADLINE_EXCEEDED`
    DeadlineExceeded = 4,
    /// 5 `NOT_FOUND`
    NotFound = 5,
    /// 7 `PERMISSION_DENIED`
    PermissionDenied = 7,
    /// 8 `RESOURCE_EXHAUSTED`
    ResourceExhausted = 8,
    /// 12 `UNIMPLEMENTED`
    Unimplemented = 12,
    /// 13 `INTERNAL`
    Internal = 13,
    /// 14 `UNAVAILABLE`
    Unavailable = 14,
    /// 16 `UNAUTHENTICATED`
    Unauthenticated = 16,
}

impl MaasError {
    /// The gRPC status a refusal sent with `status` becomes for a gRPC client.
    ///
    /// Authentication (81002, 81003) is `UNAUTHENTICATED`; a key without access to the model,
    /// a frozen key, another key's task and refused content (81004, 81006, 81109, 81011) are
    /// `PERMISSION_DENIED`; limits, a used-up quota and a body too large (81101, 81103 429,
    /// 81005, APIG.0308, 413) are `RESOURCE_EXHAUSTED`; the other 400s are `INVALID_ARGUMENT`,
    /// 404s `NOT_FOUND`, 405 `UNIMPLEMENTED`, APIG.0203 `DEADLINE_EXCEEDED`, an unreachable
    /// backend `UNAVAILABLE` and 500 `INTERNAL`. A path with no route (APIG.0101) is
    /// `UNIMPLEMENTED`, as gRPC answers an unknown method.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_maas::{GrpcCode, MaasError};
    ///
    /// let limit = MaasError::RpmExceeded { rpm: 60 };
    /// assert_eq!(limit.grpc_code(StatusCode::TOO_MANY_REQUESTS), GrpcCode::ResourceExhausted);
    /// assert_eq!(
    ///     MaasError::MissingAuthorization.grpc_code(StatusCode::BAD_REQUEST),
    ///     GrpcCode::Unauthenticated,
    /// );
    /// ```
    pub fn grpc_code(&self, status: StatusCode) -> GrpcCode {
        match self {
            Self::MissingAuthorization | Self::InvalidAuthorization => GrpcCode::Unauthenticated,
            Self::ModelNotEnabled
            | Self::ResourceFrozen
            | Self::VideoTaskForbidden { .. }
            | Self::TaskForbidden { .. }
            | Self::SensitiveContent => GrpcCode::PermissionDenied,
            Self::QuotaExhausted | Self::EntityTooLarge => GrpcCode::ResourceExhausted,
            Self::BackendTimeout => GrpcCode::DeadlineExceeded,
            Self::BackendUnavailable => GrpcCode::Unavailable,
            // No such route: for gRPC, no such method.
            Self::MethodNotAllowed | Self::ApiNotFound => GrpcCode::Unimplemented,
            _ => match status.as_u16() {
                400 | 422 => GrpcCode::InvalidArgument,
                401 => GrpcCode::Unauthenticated,
                403 => GrpcCode::PermissionDenied,
                404 => GrpcCode::NotFound,
                405 | 501 => GrpcCode::Unimplemented,
                413 | 429 => GrpcCode::ResourceExhausted,
                500 => GrpcCode::Internal,
                502 | 503 => GrpcCode::Unavailable,
                504 => GrpcCode::DeadlineExceeded,
                _ => GrpcCode::Unknown,
            },
        }
    }

    /// The refusal as a gRPC trailers-only response: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status` from [`grpc_code`](Self::grpc_code) and `grpc-message`
    /// carrying the MaaS code and message (`ModelArts.81101: Too many requests, …`),
    /// percent-encoded as gRPC requires, and no body.
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_maas::{MaasError, RequestId};
    ///
    /// let res = MaasError::InvalidAuthorization.to_grpc_response(StatusCode::UNAUTHORIZED, &RequestId::generate());
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(res.headers()["grpc-status"], "16");
    /// assert_eq!(res.headers()["grpc-message"], "ModelArts.81003: Invalid authorization header.");
    /// ```
    pub fn to_grpc_response(
        &self,
        status: StatusCode,
        request_id: &RequestId,
    ) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::new()));
        grpc_headers(res.headers_mut(), self, status);
        res.headers_mut()
            .insert(REQUEST_ID, request_id.to_header_value());
        res.extensions_mut().insert(self.clone());
        res
    }
}

/// Writes the trailers-only headers of `error` over a refusal's own (which keep, say,
/// `retry-after`); the body goes.
pub(crate) fn grpc_headers(headers: &mut http::HeaderMap, error: &MaasError, status: StatusCode) {
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-status",
        HeaderValue::from(error.grpc_code(status) as u16),
    );
    // A validation message can quote a whole body: past 1 KiB, clients' header limits (8 to
    // 16 KiB) would turn the status into a protocol error.
    let mut message = error.to_string();
    if message.len() > GRPC_MESSAGE_LIMIT {
        let mut end = GRPC_MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    let message = percent_encode_grpc(&message);
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
}

/// The longest `grpc-message`, in bytes before encoding.
const GRPC_MESSAGE_LIMIT: usize = 1024;

/// gRPC's `Percent-Encoded`: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode_grpc(text: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Put into request extensions by [`ErrorEnvelope`](crate::ErrorEnvelope): it renders every
/// refusal itself, so inner layers leave the body to it instead of rendering it twice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RenderedByEnvelope;

#[cfg_attr(not(any(feature = "auth", feature = "validate")), allow(dead_code))]
/// The refusal every layer answers with: rendered in the default dialect with the request's id
/// (or a fresh one) when the layer works alone, or left for the envelope to render.
pub(crate) fn refuse(
    layer: &'static str,
    error: MaasError,
    status: StatusCode,
    extensions: &http::Extensions,
) -> Response<Full<Bytes>> {
    trace_refusal(layer, &error, status, extensions);
    if extensions.get::<RenderedByEnvelope>().is_some() {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = status;
        res.extensions_mut().insert(error);
        return res;
    }
    let request_id = extensions
        .get::<RequestId>()
        .copied()
        .unwrap_or_else(RequestId::generate);
    error.into_response_with_status(status, Dialect::Dual, &request_id)
}

/// A `debug` event for every refusal, inside the request's span when an
/// [`ErrorEnvelope`](crate::ErrorEnvelope) opened one: the layer, the code, the status and the
/// key's id when authentication ran. Never the key.
#[cfg(feature = "tracing")]
fn trace_refusal(
    layer: &'static str,
    error: &MaasError,
    status: StatusCode,
    extensions: &http::Extensions,
) {
    #[cfg(feature = "auth")]
    let key_id = extensions
        .get::<crate::auth::Principal>()
        .map(|p| p.key_id().0);
    #[cfg(not(feature = "auth"))]
    let key_id: Option<u64> = {
        let _ = extensions;
        None
    };
    tracing::debug!(
        target: "tower_maas",
        layer,
        code = error.code().unwrap_or("-"),
        status = status.as_u16(),
        key_id,
        "refused"
    );
}

#[cfg(not(feature = "tracing"))]
#[inline]
fn trace_refusal(_: &'static str, _: &MaasError, _: StatusCode, _: &http::Extensions) {}

/// Sets the headers every rendered error carries.
pub(crate) fn set_json_headers(headers: &mut http::HeaderMap, len: usize) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

impl fmt::Display for MaasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(code) => write!(f, "{code}: {}", self.message()),
            None => write!(f, "{}: {}", self.status().as_u16(), self.message()),
        }
    }
}

impl std::error::Error for MaasError {}

/// The `type` word of the OpenAI-style error object, from the response status. The live
/// service shows `BadRequest` and `TooManyRequests`; the others follow the same pattern.
fn type_word(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        StatusCode::BAD_GATEWAY => "BadGateway",
        StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
        _ => "InternalServerError",
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising structs of strings and integers cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

// Field order is protocol: each struct is declared in the order the wire has.

#[derive(Serialize)]
struct OpenAiError<'a> {
    code: &'a str,
    message: &'a str,
    param: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct DualBody<'a> {
    error: OpenAiError<'a>,
    error_code: &'a str,
    error_msg: &'a str,
}

#[derive(Serialize)]
struct FlatBody<'a> {
    error_code: &'a str,
    error_msg: &'a str,
}

#[derive(Serialize)]
struct ApigBody<'a> {
    error_msg: &'a str,
    error_code: &'a str,
    request_id: &'a str,
}

#[derive(Serialize)]
struct BackendBody<'a> {
    object: &'a str,
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: u16,
}

#[derive(Serialize)]
struct DetailBody<'a> {
    detail: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded_as_grpc_says() {
        assert_eq!(
            percent_encode_grpc("ModelArts.81011: 50% 敏感\n"),
            "ModelArts.81011: 50%25 %E6%95%8F%E6%84%9F%0A"
        );
        assert_eq!(percent_encode_grpc("plain: text ~"), "plain: text ~");
    }

    #[test]
    fn long_grpc_messages_are_cut_at_a_character() {
        let error = MaasError::Validation {
            message: "字".repeat(2000),
        };
        let res = error.to_grpc_response(StatusCode::BAD_REQUEST, &RequestId::generate());
        let header = res.headers()["grpc-message"].to_str().unwrap();
        // 1 KiB of text at most, each byte of a CJK character encoded as `%XX`, then `…`.
        assert!(header.len() <= 3 * 1024 + 9, "{}", header.len());
        assert!(header.ends_with("%E5%AD%97%E2%80%A6"), "{header}");
    }

    #[test]
    fn a_backend_error_without_a_code_keeps_its_message_in_grpc() {
        let res = MaasError::UnparsableBody
            .to_grpc_response(StatusCode::BAD_REQUEST, &RequestId::generate());
        assert_eq!(res.headers()["grpc-status"], "3");
        assert_eq!(
            res.headers()["grpc-message"],
            "400: There was an error parsing the body"
        );
    }
}
