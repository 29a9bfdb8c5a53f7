//! [`ManagementApi`]: the custom-endpoint routes of MaaS as one tower service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::ALLOW;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::Serialize;
use serde_json::{Map, Value};
use tower_service::Service;

use super::access::{ManagementAccess, ServiceDirectory};
use super::record::{
    CustomEndpoint, EndpointChange, EndpointView, LimitChange, NewEndpoint, Owner,
};
use super::registry::EndpointRegistry;
use super::rules::{is_valid_name, passes_security_check};
use crate::body::BoxError;
use crate::error::{MaasError, refuse, set_json_headers};

/// The header that carries the management token, as in Huawei Cloud's APIs.
pub const AUTH_TOKEN: &str = "x-auth-token";

/// The bound on a management request's body (413 APIG.0201 beyond it).
pub const MANAGEMENT_BODY_LIMIT: usize = 64 * 1024;

/// The longest remark, in characters.
const REMARK_LIMIT: usize = 256;

/// The collection route, in axum's path syntax.
pub const ENDPOINTS_ROUTE: &str = "/v1/{project_id}/maas/services/custom-endpoint/endpoint";

/// The item route, in axum's path syntax.
pub const ENDPOINT_ROUTE: &str =
    "/v1/{project_id}/maas/services/custom-endpoint/endpoint/{custom_endpoint_id}";

/// Every path to mount the API on, in axum's syntax: the collection, the item, and the item
/// with an empty id (`…/endpoint/`, which the API answers with 6299 where a router would give
/// 404).
pub const MANAGEMENT_ROUTES: [&str; 3] = [
    ENDPOINTS_ROUTE,
    "/v1/{project_id}/maas/services/custom-endpoint/endpoint/",
    ENDPOINT_ROUTE,
];

/// The custom-endpoint management API of MaaS: create, list, get, edit and delete the
/// endpoints of a registry, answering `{"error_code","error_msg"}` refusals exactly as MaaS.
/// See the [module docs](super) for the routes, the bodies and the order of the checks.
pub struct ManagementApi<R> {
    shared: Arc<Shared<R>>,
}

struct Shared<R> {
    registry: R,
    access: ManagementAccess,
    services: ServiceDirectory,
    body_limit: usize,
}

impl<R: EndpointRegistry> ManagementApi<R> {
    /// The API over `registry`, for the tokens of `access`, creating endpoints for the
    /// services of `services`.
    pub fn new(registry: R, access: ManagementAccess, services: ServiceDirectory) -> Self {
        Self {
            shared: Arc::new(Shared {
                registry,
                access,
                services,
                body_limit: MANAGEMENT_BODY_LIMIT,
            }),
        }
    }

    /// The bound on a body (default 64 KiB).
    pub fn body_limit(mut self, limit: usize) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("configure before cloning the API")
            .body_limit = limit;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &R {
        &self.shared.registry
    }
}

impl<R> Clone for ManagementApi<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R> fmt::Debug for ManagementApi<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementApi")
            .field("access", &self.shared.access)
            .field("body_limit", &self.shared.body_limit)
            .finish_non_exhaustive()
    }
}

/// Response future of [`ManagementApi`].
pub type ManagementFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl<R, B> Service<Request<B>> for ManagementApi<R>
where
    R: EndpointRegistry,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ManagementFuture;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let answer = match shared.authorize(&parts) {
                Err(error) => Err(error),
                Ok((owner, op)) => {
                    let body = if op.needs_body() {
                        match Limited::new(body, shared.body_limit).collect().await {
                            Ok(collected) => Ok(collected.to_bytes()),
                            Err(err) if err.is::<LengthLimitError>() => {
                                Err(MaasError::EntityTooLarge.into())
                            }
                            Err(_) => Err(MaasError::InvalidJsonBody.into()),
                        }
                    } else {
                        Ok(Bytes::new())
                    };
                    match body {
                        Err(refusal) => Err(refusal),
                        // A durable registry waits for the disk: not on the runtime's threads.
                        Ok(body) => {
                            tokio::task::spawn_blocking(move || shared.run(&owner, op, &body))
                                .await
                                .unwrap_or_else(|_| Err(MaasError::Internal.into()))
                        }
                    }
                }
            };
            Ok(match answer {
                Ok(response) => response,
                Err(Refusal { error, allow }) => {
                    let status = error.status();
                    let mut response = refuse("ManagementApi", error, status, &parts.extensions);
                    if let Some(allow) = allow {
                        response
                            .headers_mut()
                            .insert(ALLOW, HeaderValue::from_static(allow));
                    }
                    response
                }
            })
        })
    }
}

/// A refusal, with the methods a 405 allows.
struct Refusal {
    error: MaasError,
    allow: Option<&'static str>,
}

impl From<MaasError> for Refusal {
    fn from(error: MaasError) -> Self {
        Self { error, allow: None }
    }
}

fn method_not_allowed(allow: &'static str) -> Refusal {
    Refusal {
        error: MaasError::MethodNotAllowed,
        allow: Some(allow),
    }
}

/// What a request asks for, once its path and method are known.
enum Op {
    List,
    Get(String),
    Delete(String),
    Create,
    Update(String),
}

impl Op {
    fn needs_body(&self) -> bool {
        matches!(self, Self::Create | Self::Update(_))
    }
}

impl<R: EndpointRegistry> Shared<R> {
    /// Route, token, path parameters, project: everything decided before the body is read.
    fn authorize(&self, parts: &http::request::Parts) -> Result<(Owner, Op), Refusal> {
        let Some((project, id)) = split_path(parts.uri.path()) else {
            return Err(MaasError::ApiNotFound.into());
        };
        let account = parts
            .headers
            .get(AUTH_TOKEN)
            .and_then(|v| v.to_str().ok())
            .and_then(|token| self.access.account(token))
            .ok_or(MaasError::NoManagementPermission)?;
        let project = path_parameter(project, "project_id")?;
        let id = id
            .map(|id| path_parameter(id, "custom_endpoint_id"))
            .transpose()?;
        if !account.manages(&project) {
            return Err(MaasError::NoManagementPermission.into());
        }
        let method = &parts.method;
        let op = match id {
            None if *method == Method::POST => Op::Create,
            None if *method == Method::GET => Op::List,
            None if *method == Method::PUT || *method == Method::DELETE => {
                return Err(MaasError::EndpointIdRequired.into());
            }
            None => return Err(method_not_allowed("GET, POST")),
            Some(_) if !matches!(*method, Method::GET | Method::PUT | Method::DELETE) => {
                return Err(method_not_allowed("GET, PUT, DELETE"));
            }
            Some(id) if id.is_empty() => return Err(MaasError::EndpointIdRequired.into()),
            Some(id) if *method == Method::GET => Op::Get(id),
            Some(id) if *method == Method::PUT => Op::Update(id),
            Some(id) => Op::Delete(id),
        };
        Ok((account.owner(&project), op))
    }

    fn run(&self, owner: &Owner, op: Op, body: &[u8]) -> Result<Response<Full<Bytes>>, Refusal> {
        let registry = &self.registry;
        match op {
            Op::List => {
                let (items, total) = registry.list(owner);
                Ok(json(&Listing {
                    total,
                    // MaaS documents `count` as a string.
                    count: items.len().to_string(),
                    items: items.iter().map(CustomEndpoint::view).collect(),
                    quantity_limit: owner.quota,
                }))
            }
            Op::Get(id) => Ok(json(
                &registry.get(owner, &id).map_err(registry_refusal)?.view(),
            )),
            Op::Delete(id) => {
                registry.delete(owner, &id).map_err(registry_refusal)?;
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                Ok(response)
            }
            Op::Create => {
                // Every field's type first (2115), then every string's security check (6298),
                // then the rules of each field.
                let mut fields = Fields::of(body)?;
                let name = fields.string("endpoint_name")?;
                let service = fields.string("infer_service_id")?;
                let remark = fields.remark()?;
                let (rpm, tpm) = (fields.limit("rpm")?, fields.limit("tpm")?);
                secure(&[
                    ("endpoint_name", &name),
                    ("infer_service_id", &service),
                    ("remark", &remark),
                ])?;
                let name = name.value().ok_or(MaasError::EndpointNameRequired)?;
                self.check_name(&name)?;
                let service = service.value().ok_or(MaasError::InvalidJsonBody)?;
                let model = self
                    .services
                    .mountable(&service)
                    .ok_or(MaasError::ServiceNotMountable)?;
                let new = NewEndpoint {
                    endpoint_name: name,
                    served_model_name: model.to_owned(),
                    infer_service_id: service,
                    remark: remark.value().unwrap_or_default(),
                    rpm: rpm.value(),
                    tpm: tpm.value(),
                };
                let created = self.registry.create(owner, new).map_err(registry_refusal)?;
                Ok(json(&created.view()))
            }
            Op::Update(id) => {
                let mut fields = Fields::of(body)?;
                let name = fields.string("endpoint_name")?;
                let remark = fields.remark()?;
                let (rpm, tpm) = (fields.limit("rpm")?, fields.limit("tpm")?);
                secure(&[("endpoint_name", &name), ("remark", &remark)])?;
                let name = name.value();
                if let Some(name) = &name {
                    self.check_name(name)?;
                }
                let change = EndpointChange {
                    endpoint_name: name,
                    remark: match remark {
                        Field::Absent => None,
                        Field::Null => Some(String::new()),
                        Field::Value(text) => Some(text),
                    },
                    rpm: rpm.change(),
                    tpm: tpm.change(),
                };
                let updated = self
                    .registry
                    .update(owner, &id, change)
                    .map_err(registry_refusal)?;
                Ok(json(&updated.view()))
            }
        }
    }

    /// The name rule (6274), and a model's own name, which could never be called as an
    /// endpoint's (6271).
    fn check_name(&self, name: &str) -> Result<(), MaasError> {
        if !is_valid_name(name) {
            return Err(MaasError::EndpointNameInvalid);
        }
        if self.services.serves_model(name) {
            return Err(MaasError::EndpointNameUsed);
        }
        Ok(())
    }
}

/// A registry's refusal as the API's; a storage failure, answered with a bare 500, is logged
/// here with its cause (a path and an OS error, never a token).
fn registry_refusal(error: super::EndpointError) -> MaasError {
    #[cfg(feature = "tracing")]
    if let super::EndpointError::Storage(cause) = &error {
        tracing::warn!(target: "tower_maas", %cause, "the endpoint registry could not store a change");
    }
    error.to_maas()
}

/// The security check (6298) of string parameters, in order: the first to fail is named.
fn secure(params: &[(&'static str, &Field<String>)]) -> Result<(), MaasError> {
    for &(name, field) in params {
        if let Field::Value(value) = field {
            if !passes_security_check(value) {
                return Err(MaasError::SecurityCheckFailed {
                    param: name.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// A body field: absent, `null`, or a value.
enum Field<T> {
    Absent,
    Null,
    Value(T),
}

impl<T> Field<T> {
    /// The value, if one was given.
    fn value(self) -> Option<T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Absent | Self::Null => None,
        }
    }
}

impl Field<u64> {
    /// What an edit does with a limit.
    fn change(self) -> LimitChange {
        match self {
            Self::Absent => LimitChange::Keep,
            Self::Null => LimitChange::Remove,
            Self::Value(n) => LimitChange::Set(n),
        }
    }
}

/// The fields of a body, taken one by one.
struct Fields(Map<String, Value>);

impl Fields {
    /// The body's fields: it must be a JSON object (2115).
    fn of(body: &[u8]) -> Result<Self, MaasError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => Ok(Self(fields)),
            _ => Err(MaasError::InvalidJsonBody),
        }
    }

    /// A string parameter.
    fn string(&mut self, name: &'static str) -> Result<Field<String>, MaasError> {
        match self.0.remove(name) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(Value::String(s)) => Ok(Field::Value(s)),
            Some(_) => Err(MaasError::InvalidJsonBody),
        }
    }

    fn remark(&mut self) -> Result<Field<String>, MaasError> {
        let remark = self.string("remark")?;
        if let Field::Value(text) = &remark {
            if text.chars().count() > REMARK_LIMIT {
                return Err(MaasError::InvalidJsonBody);
            }
        }
        Ok(remark)
    }

    /// An RPM or TPM: a positive integer, or `null` for none.
    fn limit(&mut self, name: &str) -> Result<Field<u64>, MaasError> {
        match self.0.remove(name) {
            None => Ok(Field::Absent),
            Some(Value::Null) => Ok(Field::Null),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n > 0 => Ok(Field::Value(n)),
                _ => Err(MaasError::InvalidJsonBody),
            },
            Some(_) => Err(MaasError::InvalidJsonBody),
        }
    }
}

/// The list's body, keys in MaaS's documented order.
#[derive(Serialize)]
struct Listing<'a> {
    total: usize,
    count: String,
    items: Vec<EndpointView<'a>>,
    quantity_limit: usize,
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::new()));
    set_json_headers(response.headers_mut(), body.len());
    *response.body_mut() = Full::new(Bytes::from(body));
    response
}

/// `/v1/{project}/maas/services/custom-endpoint/endpoint[/{id}]` → the raw project and id
/// segments; `None` for any other path.
fn split_path(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/v1/")?;
    let (project, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("maas/services/custom-endpoint/endpoint")?;
    if project.is_empty() {
        return None;
    }
    match rest {
        "" => Some((project, None)),
        _ => {
            let id = rest.strip_prefix('/')?;
            (!id.contains('/')).then_some((project, Some(id)))
        }
    }
}

/// A percent-decoded path parameter that passes the security check (6298 otherwise).
fn path_parameter(raw: &str, name: &'static str) -> Result<String, MaasError> {
    percent_decode(raw)
        .filter(|value| passes_security_check(value))
        .ok_or_else(|| MaasError::SecurityCheckFailed {
            param: name.to_owned(),
        })
}

/// `%XX` decoding; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_project_and_id() {
        let base = "/v1/p1/maas/services/custom-endpoint/endpoint";
        assert_eq!(split_path(base), Some(("p1", None)));
        assert_eq!(
            split_path(&format!("{base}/abc")),
            Some(("p1", Some("abc")))
        );
        assert_eq!(split_path(&format!("{base}/")), Some(("p1", Some(""))));
        assert_eq!(split_path(&format!("{base}/a/b")), None);
        assert_eq!(split_path(&format!("{base}s")), None);
        assert_eq!(
            split_path("/v1//maas/services/custom-endpoint/endpoint"),
            None
        );
        assert_eq!(split_path("/v1/p1/maas/services/custom-endpoint"), None);
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%3Cb").as_deref(), Some("a<b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("a%3"), None);
        assert_eq!(percent_decode("a%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
