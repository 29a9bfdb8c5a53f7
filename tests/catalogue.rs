//! Every row of the catalogue, rendered in every dialect, over a real socket, whole bodies
//! compared.

mod common;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use common::{FIXED_ID, empty, send, serve_axum};
use http::Request;
use tower_maas::{Dialect, ErrorEnvelopeLayer, MaasError, Party, RequestId, ThrottleWindow};

/// One row: the error, its status, and its body in the dual, flat and OpenAI dialects.
struct Row {
    error: MaasError,
    status: u16,
    dual: String,
    flat: String,
    openai: String,
}

fn gateway(error: MaasError, status: u16, code: &str, msg: &str, kind: &str) -> Row {
    let inner = format!(r#"{{"code":"{code}","message":"{msg}","param":null,"type":"{kind}"}}"#);
    Row {
        error,
        status,
        dual: format!(r#"{{"error":{inner},"error_code":"{code}","error_msg":"{msg}"}}"#),
        flat: format!(r#"{{"error_code":"{code}","error_msg":"{msg}"}}"#),
        openai: format!(r#"{{"error":{inner}}}"#),
    }
}

fn apig(error: MaasError, status: u16, code: &str, msg: &str, kind: &str) -> Row {
    let apig =
        format!(r#"{{"error_msg":"{msg}","error_code":"{code}","request_id":"{FIXED_ID}"}}"#);
    Row {
        error,
        status,
        dual: apig.clone(),
        flat: apig,
        openai: format!(
            r#"{{"error":{{"code":"{code}","message":"{msg}","param":null,"type":"{kind}"}}}}"#
        ),
    }
}

/// Backend, framework and management rows keep their own shape in every dialect.
fn fixed(error: MaasError, status: u16, body: &str) -> Row {
    Row {
        error,
        status,
        dual: body.to_owned(),
        flat: body.to_owned(),
        openai: body.to_owned(),
    }
}

fn mgmt(error: MaasError, status: u16, code: &str, msg: &str) -> Row {
    fixed(
        error,
        status,
        &format!(r#"{{"error_code":"{code}","error_msg":"{msg}"}}"#),
    )
}

fn task(id: &str) -> String {
    id.to_owned()
}

fn rows() -> Vec<Row> {
    use MaasError::*;
    vec![
        // Seed 000, the MaaS gateway rows.
        gateway(InvalidRequestBody, 400, "ModelArts.81001", "Invalid request body.", "BadRequest"),
        gateway(MissingAuthorization, 400, "ModelArts.81002", "Failed to get the authorization header.", "BadRequest"),
        gateway(InvalidAuthorization, 401, "ModelArts.81003", "Invalid authorization header.", "Unauthorized"),
        gateway(ModelNotEnabled, 401, "ModelArts.81004", "Invalid request because you do not have access to it.", "Unauthorized"),
        gateway(QuotaExhausted, 401, "ModelArts.81005", "The free quota has been used up.", "Unauthorized"),
        gateway(ResourceFrozen, 401, "ModelArts.81006", "The resource is frozen.", "Unauthorized"),
        gateway(VideoTaskForbidden { task_id: task("task-42") }, 401, "ModelArts.81109", "No permission query task task-42", "Unauthorized"),
        gateway(TaskForbidden { task_id: task("task-42") }, 403, "ModelArts.81109", "No permission query task task-42", "Forbidden"),
        gateway(SensitiveContent, 403, "ModelArts.81011", "May contain senstive.....", "Forbidden"),
        gateway(InvalidModel, 404, "ModelArts.81009", "Invalid model.", "NotFound"),
        gateway(TaskNotFound { task_id: task("task-42") }, 404, "ModelArts.81108", "Task task-42 does not exist", "NotFound"),
        gateway(RpmExceeded { rpm: 60 }, 429, "ModelArts.81101", "Too many requests, exceeded rate limit is 60 times per minute.", "TooManyRequests"),
        gateway(TpmExceeded { tpm: 100_000 }, 429, "ModelArts.81103", "Too many requests. exceeded rate limit is 100000 tokens per minute.", "TooManyRequests"),
        // Seed 000, the APIG rows, and the spec's 413.
        apig(BackendTimeout, 504, "APIG.0203", "Backend timeout", "GatewayTimeout"),
        apig(ApiNotFound, 404, "APIG.0101", "The API does not exist or has not been published in the environment", "NotFound"),
        apig(IpThrottled { limit: 5, window: ThrottleWindow::MINUTE }, 429, "APIG.0308", "The throttling threshold has been reached: policy ip over ratelimit,limit:5,time:1 minute", "TooManyRequests"),
        apig(IpThrottled { limit: 100, window: ThrottleWindow::SECOND }, 429, "APIG.0308", "The throttling threshold has been reached: policy ip over ratelimit,limit:100,time:1 second", "TooManyRequests"),
        apig(EntityTooLarge, 413, "APIG.0201", "Request entity too large.", "RequestEntityTooLarge"),
        apig(BackendUnavailable, 502, "APIG.0201", "Backend unavailable.", "BadGateway"),
        apig(Internal, 500, "APIG.0201", "Internal server error.", "InternalServerError"),
        // Seed 000, the framework and backend rows.
        fixed(MethodNotAllowed, 405, r#"{"detail":"Method Not Allowed"}"#),
        fixed(
            Validation { message: "[{'type': 'missing', 'loc': ('body', 'model'), 'msg': 'Field required', 'input': {'max_tokens': 20, 'messages': [{'role': 'system', 'content': 'You are a helpful assistant.'}, {'role': 'user', 'content': 'Hello'}], 'stream': False, 'temperature': 1.0}}]".to_owned() },
            400,
            r#"{"object":"error","message":"[{'type': 'missing', 'loc': ('body', 'model'), 'msg': 'Field required', 'input': {'max_tokens': 20, 'messages': [{'role': 'system', 'content': 'You are a helpful assistant.'}, {'role': 'user', 'content': 'Hello'}], 'stream': False, 'temperature': 1.0}}]","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(
            Validation { message: "[{'type': 'extra_forbidden', 'loc': ('body', 'test'), 'msg': 'Extra inputs are not permitted', 'input': 15}]".to_owned() },
            400,
            r#"{"object":"error","message":"[{'type': 'extra_forbidden', 'loc': ('body', 'test'), 'msg': 'Extra inputs are not permitted', 'input': 15}]","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(
            Validation { message: r#"[{'type': 'json_invalid', 'loc': ('body', 273), 'msg': 'JSON decode error', 'input': {}, 'ctx': {'error': "Expecting ',' delimiter"}}]"#.to_owned() },
            400,
            r#"{"object":"error","message":"[{'type': 'json_invalid', 'loc': ('body', 273), 'msg': 'JSON decode error', 'input': {}, 'ctx': {'error': \"Expecting ',' delimiter\"}}]","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(
            Validation { message: "[{'type': 'missing', 'loc': ('body',), 'msg': 'Field required', 'input': None}]".to_owned() },
            400,
            r#"{"object":"error","message":"[{'type': 'missing', 'loc': ('body',), 'msg': 'Field required', 'input': None}]","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(
            ContextLengthExceeded { max: 4096, prompt: 20, completion: Some(8222) },
            400,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 8242 tokens (20 in the messages, 8222 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(
            ContextLengthExceeded { max: 4096, prompt: 5000, completion: None },
            400,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens in the messages, Please reduce the length of the messages.","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(
            EmbeddingContextLengthExceeded { max: 512, input: 600 },
            400,
            r#"{"object":"error","message":"This model's maximum context length is 512 tokens. However, you requested 600 tokens in the input for embedding generation. Please reduce the length of the input.","type":"BadRequestError","param":null,"code":400}"#,
        ),
        fixed(UnparsableBody, 400, r#"{"detail":"There was an error parsing the body"}"#),
        fixed(
            BackendModelNotFound { model: "DeepSeek-R1".to_owned() },
            404,
            r#"{"object":"error","message":"The model `DeepSeek-R1` does not exist.","type":"NotFoundError","param":null,"code":404}"#,
        ),
        // Seed 003, the management API.
        mgmt(EndpointNameRequired, 400, "ModelArts.0104", "CreateCustomEndpointReq.endpoint_name is a required field"),
        mgmt(EndpointNameUsed, 400, "ModelArts.6271", "Custom endpoint name has already been used (including deleted access points). To ensure billing uniqueness, please use a different name."),
        mgmt(EndpointNameInvalid, 400, "ModelArts.6274", "Custom endpoint name is invalid. Enter 1 to 64 characters, staring with a letter. Only letters, digits, point(.), underscores (_), and hyphens (-) are allowed"),
        mgmt(EndpointNotFound, 400, "ModelArts.6291", "CustomEndpointNotFound"),
        mgmt(EndpointQuotaExceeded, 400, "ModelArts.6297", "Custom endpoint number exceed quota"),
        mgmt(EndpointIdRequired, 400, "ModelArts.6299", "Custom endpoint id is required"),
        mgmt(ServiceNotMountable, 400, "ModelArts.6613", "Operation failed. The online service status needs to have the 'Mount to MAAS Gateway' switch turned on or the authentication method set to 'No Authentication' in order to create a custom custom endpoint."),
        mgmt(NoManagementPermission, 401, "ModelArts.8503", "No permission to create modelarts custom endpoints"),
        mgmt(InvalidJsonBody, 400, "ModelArts.2115", "Invalid JSON request body"),
        mgmt(SecurityCheckFailed { param: "endpoint_name".to_owned() }, 400, "ModelArts.6298", "Parameter (endpoint_name) security check failed, please check for special characters."),
    ]
}

fn fixed_id() -> RequestId {
    FIXED_ID.parse().unwrap()
}

#[test]
fn every_row_renders_exactly_in_every_dialect() {
    for row in rows() {
        let id = fixed_id();
        assert_eq!(row.error.status().as_u16(), row.status, "{:?}", row.error);
        for (dialect, expected) in [
            (Dialect::Dual, &row.dual),
            (Dialect::Flat, &row.flat),
            (Dialect::OpenAi, &row.openai),
        ] {
            let rendered = row.error.render(dialect, &id);
            assert_eq!(
                std::str::from_utf8(&rendered).unwrap(),
                expected,
                "{dialect:?}"
            );
            let res = row.error.to_response(dialect, &id);
            assert_eq!(res.status().as_u16(), row.status);
            assert_eq!(res.headers()["content-type"], "application/json");
            assert_eq!(
                res.headers()["content-length"],
                expected.len().to_string().as_str()
            );
            assert_eq!(res.headers()["x-request-id"], FIXED_ID);
            assert_eq!(res.extensions().get::<MaasError>(), Some(&row.error));
        }
    }
}

#[test]
fn the_catalogue_covers_both_seeds() {
    let rows = rows();
    let codes: std::collections::BTreeSet<_> = rows.iter().filter_map(|r| r.error.code()).collect();
    for code in [
        "ModelArts.81001",
        "ModelArts.81002",
        "ModelArts.81003",
        "ModelArts.81004",
        "ModelArts.81005",
        "ModelArts.81006",
        "ModelArts.81109",
        "ModelArts.81011",
        "ModelArts.81009",
        "ModelArts.81108",
        "ModelArts.81101",
        "ModelArts.81103",
        "APIG.0203",
        "APIG.0101",
        "APIG.0308",
        "APIG.0201",
        "ModelArts.0104",
        "ModelArts.6271",
        "ModelArts.6274",
        "ModelArts.6291",
        "ModelArts.6297",
        "ModelArts.6299",
        "ModelArts.6613",
        "ModelArts.8503",
        "ModelArts.2115",
        "ModelArts.6298",
    ] {
        assert!(codes.contains(code), "{code} has no row");
    }
    let parties: std::collections::HashSet<_> = rows.iter().map(|r| r.error.party()).collect();
    assert_eq!(parties.len(), 5);
    assert!(parties.contains(&Party::Backend));
}

#[test]
fn templates_are_the_seeds_words() {
    assert_eq!(
        MaasError::RpmExceeded { rpm: 1 }.template(),
        "Too many requests, exceeded rate limit is {rpm} times per minute."
    );
    assert_eq!(
        MaasError::TpmExceeded { tpm: 1 }.template(),
        "Too many requests. exceeded rate limit is %s tokens per minute."
    );
    assert_eq!(
        MaasError::TaskNotFound {
            task_id: String::new()
        }
        .template(),
        "Task %s does not exist"
    );
    assert_eq!(
        MaasError::SecurityCheckFailed {
            param: String::new()
        }
        .template(),
        "Parameter (%s) security check failed, please check for special characters."
    );
}

#[test]
fn parameters_are_json_escaped_not_injected() {
    let error = MaasError::TaskNotFound {
        task_id: "x\",\"error_code\":\"evil\n</script>".to_owned(),
    };
    assert_eq!(
        error.render(Dialect::Flat, &fixed_id()),
        r#"{"error_code":"ModelArts.81108","error_msg":"Task x\",\"error_code\":\"evil\n</script> does not exist"}"#
    );
    // Non-ASCII stays as it is, as Python's json with ensure_ascii=False writes it.
    let error = MaasError::BackendModelNotFound {
        model: "模型-é".to_owned(),
    };
    assert_eq!(
        error.render(Dialect::Dual, &fixed_id()),
        r#"{"object":"error","message":"The model `模型-é` does not exist.","type":"NotFoundError","param":null,"code":404}"#
    );
}

/// Each row, produced by a handler and re-rendered by the envelope, arrives over a real socket
/// exactly as the table says.
#[tokio::test]
async fn every_row_over_a_socket_through_the_envelope() {
    for dialect in [Dialect::Dual, Dialect::Flat, Dialect::OpenAi] {
        let app = Router::new()
            .route(
                "/row/{index}",
                get(|Path(index): Path<usize>| async move {
                    // Rendered in another dialect with another id: the envelope must redo both.
                    rows()[index]
                        .error
                        .to_response(Dialect::Flat, &RequestId::generate())
                }),
            )
            .layer(
                ErrorEnvelopeLayer::new()
                    .dialect(dialect)
                    .trust_incoming_request_id(true),
            );
        let addr = serve_axum(app).await;
        for (index, row) in rows().iter().enumerate() {
            let req = Request::get(format!("/row/{index}"))
                .header("host", "localhost")
                .header("x-request-id", FIXED_ID)
                .body(empty())
                .unwrap();
            let reply = send(addr, req).await;
            let expected = match dialect {
                Dialect::Dual => &row.dual,
                Dialect::Flat => &row.flat,
                _ => &row.openai,
            };
            reply.assert_json(row.status, expected);
            assert_eq!(reply.request_id(), FIXED_ID);
        }
    }
}
