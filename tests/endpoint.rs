//! The custom-endpoint management API (seed 003) over real sockets: every code with its whole
//! body, the durable registry across a restart, concurrent creates, and inference through an
//! endpoint with its own limits.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::post;
use common::{FIXED_ID, full, send};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower_maas::auth::{BearerAuthLayer, InMemoryKeyStore, KeyPolicy};
use tower_maas::endpoint::{
    Account, EndpointRegistry, FileRegistry, InMemoryRegistry, MANAGEMENT_ROUTES, ManagementAccess,
    ManagementApi, ServiceAccess, ServiceDirectory,
};
use tower_maas::limit::{LimitScope, ManualClock, MemoryStore, TokenRateLimitLayer};
use tower_maas::validate::{ModelCatalog, RequestSchemaValidatorLayer};
use tower_maas::{EndpointRoute, ErrorEnvelopeLayer};

const TOKEN: &str = "mgmt-Tok3n-acme-000000000000";
const OTHER_TOKEN: &str = "mgmt-Tok3n-beta-000000000000";
const PROJECT: &str = "p-acme";
const KEY: &str = "sk-EndpointKey00000000000000000";
const BASE: &str = "/v1/p-acme/maas/services/custom-endpoint/endpoint";

fn access() -> ManagementAccess {
    ManagementAccess::new()
        .token(
            TOKEN,
            Account::new("acme").project(PROJECT).endpoint_quota(3),
        )
        .token(OTHER_TOKEN, Account::new("beta").project("p-beta"))
}

fn services() -> ServiceDirectory {
    ServiceDirectory::new()
        .service("svc-deepseek", "DeepSeek-V3", ServiceAccess::MaasGateway)
        .service("svc-open", "DeepSeek-V3", ServiceAccess::NoAuth)
        .service("svc-private", "DeepSeek-V3", ServiceAccess::Token)
}

/// The API on every route it answers.
fn mount<R: EndpointRegistry>(api: ManagementApi<R>) -> Router {
    MANAGEMENT_ROUTES.iter().fold(Router::new(), |app, route| {
        app.route_service(route, api.clone())
    })
}

/// The management API alone, behind the envelope, with any registry.
/// The management API over `registry`, behind the envelope.
fn api_app<R: EndpointRegistry>(registry: R) -> Router {
    let api = ManagementApi::new(registry, access(), services());
    mount(api).layer(ErrorEnvelopeLayer::new())
}

async fn serve_api<R: EndpointRegistry>(registry: R) -> SocketAddr {
    common::serve_axum(api_app(registry)).await
}

/// [`serve_api`] until `stop` fires; the task ends once its connections have, and lets the
/// registry go with it.
async fn serve_api_until<R: EndpointRegistry>(
    registry: R,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let app = api_app(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await
            .unwrap();
    });
    (addr, served)
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> common::Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("x-auth-token", token);
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    send(addr, req.body(full(body.to_owned())).unwrap()).await
}

async fn create(addr: SocketAddr, body: Value) -> common::Reply {
    call(addr, "POST", BASE, Some(TOKEN), &body.to_string()).await
}

fn json_of(reply: &common::Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("not JSON: {}", reply.text()))
}

/// The whole body of an endpoint, with the id and times the server chose.
fn endpoint_view(
    got: &Value,
    name: &str,
    remark: &str,
    rpm: Value,
    tpm: Value,
    service: &str,
) -> Value {
    json!({
        "id": got["id"],
        "endpoint_name": name,
        "status": "running",
        "remark": remark,
        "rpm": rpm,
        "tpm": tpm,
        "infer_service_id": service,
        "served_model_name": "DeepSeek-V3",
        "created_at": got["created_at"],
        "updated_at": got["updated_at"],
    })
}

fn assert_uuid(id: &Value) {
    let id = id.as_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.as_bytes()[14], b'4', "{id}");
    assert!(
        id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{id}"
    );
}

fn error_body(code: &str, msg: &str) -> String {
    json!({"error_code": code, "error_msg": msg}).to_string()
}

#[tokio::test]
async fn create_get_list_update_delete_answer_whole_bodies() {
    let addr = serve_api(InMemoryRegistry::new()).await;
    let reply = create(
        addr,
        json!({"endpoint_name": "team-a", "infer_service_id": "svc-deepseek", "remark": "Team A (beta), 50%", "rpm": 60}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let created = json_of(&reply);
    assert_uuid(&created["id"]);
    assert_eq!(
        created,
        endpoint_view(
            &created,
            "team-a",
            "Team A (beta), 50%",
            json!(60),
            Value::Null,
            "svc-deepseek"
        )
    );
    assert!(created["created_at"].as_u64().unwrap() > 1_700_000_000_000);
    // Byte for byte, keys in the documented order.
    assert_eq!(
        reply.text(),
        format!(
            r#"{{"id":"{}","endpoint_name":"team-a","status":"running","remark":"Team A (beta), 50%","rpm":60,"tpm":null,"infer_service_id":"svc-deepseek","served_model_name":"DeepSeek-V3","created_at":{},"updated_at":{}}}"#,
            created["id"].as_str().unwrap(),
            created["created_at"],
            created["updated_at"]
        )
    );
    let id = created["id"].as_str().unwrap().to_owned();

    // A read gives the same view, byte for byte.
    let got = call(addr, "GET", &format!("{BASE}/{id}"), Some(TOKEN), "").await;
    got.assert_json(200, reply.text());

    let second_reply = create(
        addr,
        json!({"endpoint_name": "team-b", "infer_service_id": "svc-open"}),
    )
    .await;
    let second = json_of(&second_reply);
    let list = call(addr, "GET", BASE, Some(TOKEN), "").await;
    list.assert_json(
        200,
        &format!(
            r#"{{"total":2,"count":"2","items":[{},{}],"quantity_limit":3}}"#,
            reply.text(),
            second_reply.text()
        ),
    );
    assert_eq!(
        json_of(&list),
        json!({"total": 2, "count": "2", "items": [created, second], "quantity_limit": 3})
    );

    let updated = call(
        addr,
        "PUT",
        &format!("{BASE}/{id}"),
        Some(TOKEN),
        r#"{"endpoint_name":"team-a2","rpm":null,"tpm":5000,"infer_service_id":"ignored"}"#,
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    let updated_text = updated.text().to_owned();
    let updated = json_of(&updated);
    assert_eq!(
        updated_text,
        format!(
            r#"{{"id":"{id}","endpoint_name":"team-a2","status":"running","remark":"Team A (beta), 50%","rpm":null,"tpm":5000,"infer_service_id":"svc-deepseek","served_model_name":"DeepSeek-V3","created_at":{},"updated_at":{}}}"#,
            created["created_at"], updated["updated_at"]
        )
    );
    assert_eq!(updated["id"], created["id"]);
    assert_eq!(updated["created_at"], created["created_at"]);
    assert_eq!(
        updated,
        endpoint_view(
            &updated,
            "team-a2",
            "Team A (beta), 50%",
            Value::Null,
            json!(5000),
            "svc-deepseek"
        )
    );

    let deleted = call(addr, "DELETE", &format!("{BASE}/{id}"), Some(TOKEN), "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    call(addr, "GET", &format!("{BASE}/{id}"), Some(TOKEN), "")
        .await
        .assert_json(400, &error_body("ModelArts.6291", "CustomEndpointNotFound"));
    call(addr, "DELETE", &format!("{BASE}/{id}"), Some(TOKEN), "")
        .await
        .assert_json(400, &error_body("ModelArts.6291", "CustomEndpointNotFound"));
    // Both names the endpoint ever had stay taken.
    let used = error_body(
        "ModelArts.6271",
        "Custom endpoint name has already been used (including deleted access points). To ensure billing uniqueness, please use a different name.",
    );
    for name in ["team-a", "team-a2", "team-b"] {
        create(
            addr,
            json!({"endpoint_name": name, "infer_service_id": "svc-deepseek"}),
        )
        .await
        .assert_json(400, &used);
    }
    // Renaming onto a taken name is refused too.
    let second_id = second["id"].as_str().unwrap();
    call(
        addr,
        "PUT",
        &format!("{BASE}/{second_id}"),
        Some(TOKEN),
        r#"{"endpoint_name":"team-a"}"#,
    )
    .await
    .assert_json(400, &used);
}

#[tokio::test]
async fn every_refusal_of_the_seed_with_its_whole_body() {
    let addr = serve_api(InMemoryRegistry::new()).await;
    let required = error_body(
        "ModelArts.0104",
        "CreateCustomEndpointReq.endpoint_name is a required field",
    );
    let invalid_name = error_body(
        "ModelArts.6274",
        "Custom endpoint name is invalid. Enter 1 to 64 characters, staring with a letter. Only letters, digits, point(.), underscores (_), and hyphens (-) are allowed",
    );
    let bad_json = error_body("ModelArts.2115", "Invalid JSON request body");
    let no_permission = error_body(
        "ModelArts.8503",
        "No permission to create modelarts custom endpoints",
    );
    let not_mountable = error_body(
        "ModelArts.6613",
        "Operation failed. The online service status needs to have the 'Mount to MAAS Gateway' switch turned on or the authentication method set to 'No Authentication' in order to create a custom custom endpoint.",
    );
    let security = |param: &str| {
        error_body(
            "ModelArts.6298",
            &format!(
                "Parameter ({param}) security check failed, please check for special characters."
            ),
        )
    };

    // 0104: no name, or a null one.
    for body in [
        json!({"infer_service_id": "svc-deepseek"}),
        json!({"endpoint_name": null, "infer_service_id": "svc-deepseek"}),
    ] {
        create(addr, body).await.assert_json(400, &required);
    }
    // 6274.
    for name in ["", "1team", "_team", "team a", "tëam", &"t".repeat(65)] {
        create(
            addr,
            json!({"endpoint_name": name, "infer_service_id": "svc-deepseek"}),
        )
        .await
        .assert_json(400, &invalid_name);
    }
    // 2115: not JSON, not an object, wrong types, out-of-range limits, a long remark, no service.
    for body in [
        "not json".to_owned(),
        "".to_owned(),
        "[]".to_owned(),
        r#"{"endpoint_name": 7, "infer_service_id": "svc-deepseek"}"#.to_owned(),
        r#"{"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "rpm": "60"}"#.to_owned(),
        r#"{"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "rpm": 0}"#.to_owned(),
        r#"{"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "tpm": -1}"#.to_owned(),
        r#"{"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "tpm": 1.5}"#.to_owned(),
        r#"{"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "tpm": 1e400}"#.to_owned(),
        json!({"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "remark": "r".repeat(257)}).to_string(),
        r#"{"endpoint_name": "ok"}"#.to_owned(),
        r#"{"endpoint_name": "ok", "infer_service_id": "\ud800"}"#.to_owned(),
        format!(r#"{{"endpoint_name": "ok", "x": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000)),
    ] {
        let reply = call(addr, "POST", BASE, Some(TOKEN), &body).await;
        assert_eq!(reply.text(), bad_json, "{body:.80}");
        reply.assert_json(400, &bad_json);
    }
    // A remark of exactly 256 characters (not bytes) is fine.
    let ok = create(addr, json!({"endpoint_name": "long-remark", "infer_service_id": "svc-deepseek", "remark": "é".repeat(256)})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    // 6298, naming the parameter; checked before the name rule.
    for (body, param) in [
        (
            json!({"endpoint_name": "a<b>", "infer_service_id": "svc-deepseek"}),
            "endpoint_name",
        ),
        (
            json!({"endpoint_name": "ok", "infer_service_id": "svc'; DROP TABLE x"}),
            "infer_service_id",
        ),
        (
            json!({"endpoint_name": "ok", "infer_service_id": "svc-deepseek", "remark": "line\nbreak"}),
            "remark",
        ),
    ] {
        create(addr, body).await.assert_json(400, &security(param));
    }
    call(
        addr,
        "GET",
        "/v1/p%3Cacme%3E/maas/services/custom-endpoint/endpoint",
        Some(TOKEN),
        "",
    )
    .await
    .assert_json(400, &security("project_id"));
    call(addr, "GET", &format!("{BASE}/id%22x"), Some(TOKEN), "")
        .await
        .assert_json(400, &security("custom_endpoint_id"));
    // 6613: a token-authenticated service, or one the gateway does not know.
    for service in ["svc-private", "svc-unknown"] {
        create(
            addr,
            json!({"endpoint_name": "ok", "infer_service_id": service}),
        )
        .await
        .assert_json(400, &not_mountable);
    }
    // 8503: no token, an unknown one, an inference key, another account's project.
    for token in [None, Some("mgmt-nope"), Some(KEY)] {
        call(addr, "GET", BASE, token, "")
            .await
            .assert_json(401, &no_permission);
    }
    call(
        addr,
        "POST",
        BASE,
        Some(OTHER_TOKEN),
        r#"{"endpoint_name":"x","infer_service_id":"svc-deepseek"}"#,
    )
    .await
    .assert_json(401, &no_permission);
    // 6299: an edit or delete without an id.
    let id_required = error_body("ModelArts.6299", "Custom endpoint id is required");
    for (method, path) in [
        ("PUT", BASE.to_owned()),
        ("DELETE", BASE.to_owned()),
        ("GET", format!("{BASE}/")),
        ("DELETE", format!("{BASE}/")),
    ] {
        call(addr, method, &path, Some(TOKEN), "{}")
            .await
            .assert_json(400, &id_required);
    }
    // 6291: unknown id; the edit of one too.
    let not_found = error_body("ModelArts.6291", "CustomEndpointNotFound");
    call(
        addr,
        "GET",
        &format!("{BASE}/c4513589-df2e-4d58-ab0c-d5a6f2000000"),
        Some(TOKEN),
        "",
    )
    .await
    .assert_json(400, &not_found);
    call(
        addr,
        "PUT",
        &format!("{BASE}/nope"),
        Some(TOKEN),
        r#"{"rpm":5}"#,
    )
    .await
    .assert_json(400, &not_found);
    // 6297: the account's quota is 3 (one made above).
    for name in ["q1", "q2"] {
        assert_eq!(
            create(
                addr,
                json!({"endpoint_name": name, "infer_service_id": "svc-deepseek"})
            )
            .await
            .status,
            StatusCode::OK
        );
    }
    create(
        addr,
        json!({"endpoint_name": "q3", "infer_service_id": "svc-deepseek"}),
    )
    .await
    .assert_json(
        400,
        &error_body("ModelArts.6297", "Custom endpoint number exceed quota"),
    );
    // The documented order: types before the security check, the name before the service,
    // the path's parameters before the project's permission.
    for (body, expected) in [
        (r#"{"endpoint_name":"a<b","rpm":0}"#, bad_json.clone()),
        (
            r#"{"endpoint_name":"a<b","remark":"'"}"#,
            security("endpoint_name"),
        ),
        ("{}", required.clone()),
        (r#"{"endpoint_name":"1x"}"#, invalid_name.clone()),
        (r#"{"endpoint_name":"fine"}"#, bad_json.clone()),
        (
            r#"{"endpoint_name":"fine","infer_service_id":"svc-private"}"#,
            not_mountable.clone(),
        ),
    ] {
        call(addr, "POST", BASE, Some(TOKEN), body)
            .await
            .assert_json(400, &expected);
    }
    call(
        addr,
        "GET",
        &format!("{BASE}/id%22x"),
        Some(OTHER_TOKEN),
        "",
    )
    .await
    .assert_json(400, &security("custom_endpoint_id"));
    // A model's own name could never be called as an endpoint: taken.
    create(addr, json!({"endpoint_name": "DeepSeek-V3", "infer_service_id": "svc-deepseek"}))
        .await
        .assert_json(
            400,
            &error_body(
                "ModelArts.6271",
                "Custom endpoint name has already been used (including deleted access points). To ensure billing uniqueness, please use a different name.",
            ),
        );
    // A body over the bound: APIG's 413.
    let huge = format!(
        r#"{{"endpoint_name":"big","remark":"{}"}}"#,
        "r".repeat(70_000)
    );
    let reply = call(addr, "POST", BASE, Some(TOKEN), &huge).await;
    reply.assert_json(
        413,
        &format!(
            r#"{{"error_msg":"Request entity too large.","error_code":"APIG.0201","request_id":"{}"}}"#,
            reply.request_id()
        ),
    );
    // A wrong method: 405 with `allow`, the endpoint's and the collection's own.
    let reply = call(addr, "PATCH", &format!("{BASE}/x"), Some(TOKEN), "").await;
    reply.assert_json(405, r#"{"detail":"Method Not Allowed"}"#);
    assert_eq!(reply.header("allow"), Some("GET, PUT, DELETE"));
    // PUT and DELETE there are answered (6299, the id is missing) but not allowed.
    let reply = call(addr, "PATCH", BASE, Some(TOKEN), "").await;
    reply.assert_json(405, r#"{"detail":"Method Not Allowed"}"#);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
}

#[tokio::test]
async fn another_project_or_account_does_not_see_an_endpoint() {
    let registry = Arc::new(InMemoryRegistry::new());
    // Two accounts that manage every project.
    let api = ManagementApi::new(
        Arc::clone(&registry),
        ManagementAccess::new()
            .token(TOKEN, Account::new("acme"))
            .token(OTHER_TOKEN, Account::new("beta")),
        services(),
    );
    let addr = common::serve_axum(mount(api)).await;
    let created = json_of(
        &create(
            addr,
            json!({"endpoint_name": "mine", "infer_service_id": "svc-deepseek"}),
        )
        .await,
    );
    let id = created["id"].as_str().unwrap();
    let other = format!("/v1/p-other/maas/services/custom-endpoint/endpoint/{id}");
    call(addr, "GET", &other, Some(TOKEN), "")
        .await
        .assert_json(400, &error_body("ModelArts.6291", "CustomEndpointNotFound"));
    // Another account, in the same project: not found, not editable, not deletable.
    let same = format!("{BASE}/{id}");
    for method in ["GET", "PUT", "DELETE"] {
        call(addr, method, &same, Some(OTHER_TOKEN), "{}")
            .await
            .assert_json(400, &error_body("ModelArts.6291", "CustomEndpointNotFound"));
    }
    let theirs = call(addr, "GET", BASE, Some(OTHER_TOKEN), "").await;
    assert_eq!(
        json_of(&theirs),
        json!({"total": 0, "count": "0", "items": [], "quantity_limit": 10})
    );
    assert_eq!(
        call(addr, "GET", &same, Some(TOKEN), "").await.status,
        StatusCode::OK
    );
    let list = call(
        addr,
        "GET",
        "/v1/p-other/maas/services/custom-endpoint/endpoint",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(
        json_of(&list),
        json!({"total": 1, "count": "0", "items": [], "quantity_limit": 10})
    );
}

#[tokio::test]
async fn of_concurrent_creates_of_one_name_exactly_one_wins() {
    let dir = scratch_dir("concurrent");
    let addr = serve_api(FileRegistry::open(dir.join("endpoints.json")).unwrap()).await;
    let replies = futures_join_all((0..16).map(|i| async move {
        // Different services and remarks: only the name is shared.
        create(addr, json!({"endpoint_name": "contested", "infer_service_id": "svc-deepseek", "remark": format!("try {i}")})).await
    }))
    .await;
    let won = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let lost = replies
        .iter()
        .filter(|r| {
            r.status == StatusCode::BAD_REQUEST && json_of(r)["error_code"] == "ModelArts.6271"
        })
        .count();
    assert_eq!((won, lost), (1, 15));
    let list = json_of(&call(addr, "GET", BASE, Some(TOKEN), "").await);
    assert_eq!(list["total"], 1);
}

#[tokio::test]
async fn the_file_registry_keeps_endpoints_and_retired_names_across_a_restart() {
    let dir = scratch_dir("restart");
    let path = dir.join("endpoints.json");
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (kept, gone, served) = {
        let (addr, served) = serve_api_until(FileRegistry::open(&path).unwrap(), stopped).await;
        let kept = json_of(
            &create(
                addr,
                json!({"endpoint_name": "kept", "infer_service_id": "svc-deepseek", "rpm": 5}),
            )
            .await,
        );
        let gone = json_of(
            &create(
                addr,
                json!({"endpoint_name": "gone", "infer_service_id": "svc-deepseek"}),
            )
            .await,
        );
        let id = gone["id"].as_str().unwrap();
        assert_eq!(
            call(addr, "DELETE", &format!("{BASE}/{id}"), Some(TOKEN), "")
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        (kept, gone, served)
    };
    // A second gateway on the same ledger while the first runs would overwrite its changes:
    // it cannot open it.
    let taken = FileRegistry::open(&path).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::WouldBlock, "{taken}");
    // The first stops, and lets the ledger go.
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), served)
        .await
        .expect("the first server stopped")
        .unwrap();
    // A second process: a new registry read from the file alone.
    let registry = Arc::new(FileRegistry::open(&path).unwrap());
    assert_eq!(
        tower_maas::EndpointResolver::resolve(&*registry, "kept")
            .unwrap()
            .rpm_limit(),
        Some(5)
    );
    let addr = serve_api(Arc::clone(&registry)).await;
    let list = json_of(&call(addr, "GET", BASE, Some(TOKEN), "").await);
    assert_eq!(list["items"], json!([kept]));
    create(addr, json!({"endpoint_name": "gone", "infer_service_id": "svc-deepseek"}))
        .await
        .assert_json(
            400,
            &error_body(
                "ModelArts.6271",
                "Custom endpoint name has already been used (including deleted access points). To ensure billing uniqueness, please use a different name.",
            ),
        );
    let gone_id = gone["id"].as_str().unwrap();
    call(addr, "GET", &format!("{BASE}/{gone_id}"), Some(TOKEN), "")
        .await
        .assert_json(400, &error_body("ModelArts.6291", "CustomEndpointNotFound"));
    // A new endpoint never reuses a limiter key.
    let fresh = json_of(
        &create(
            addr,
            json!({"endpoint_name": "fresh", "infer_service_id": "svc-deepseek"}),
        )
        .await,
    );
    let keys: Vec<u64> = ["kept", "fresh"]
        .iter()
        .map(|n| {
            tower_maas::EndpointResolver::resolve(&*registry, n)
                .unwrap()
                .limit_key()
        })
        .collect();
    assert_eq!(keys, [0, 2]);
    assert_uuid(&fresh["id"]);
    // No temporary file is left behind; the lock's file stays.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["endpoints.json", "endpoints.json.lock"]);
}

#[tokio::test]
async fn a_change_that_cannot_be_stored_is_not_made() {
    let dir = scratch_dir("unwritable");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let registry = Arc::new(FileRegistry::open(dir.join("sub").join("endpoints.json")).unwrap());
    // The registry's directory disappears: every write fails.
    std::fs::remove_dir_all(dir.join("sub")).unwrap();
    let addr = serve_api(Arc::clone(&registry)).await;
    let reply = create(
        addr,
        json!({"endpoint_name": "lost", "infer_service_id": "svc-deepseek"}),
    )
    .await;
    let id = reply.request_id().to_owned();
    reply.assert_json(
        500,
        &format!(r#"{{"error_msg":"Internal server error.","error_code":"APIG.0201","request_id":"{id}"}}"#),
    );
    assert!(tower_maas::EndpointResolver::resolve(&*registry, "lost").is_none());
    let list = json_of(&call(addr, "GET", BASE, Some(TOKEN), "").await);
    assert_eq!(list["total"], 0);
    // Once the directory is back, the same name can be created: the failed try used nothing.
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let reply = create(
        addr,
        json!({"endpoint_name": "lost", "infer_service_id": "svc-deepseek"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

/// One registry owns a ledger, in this process or another: a second open fails while the
/// first lives, and succeeds once it is gone.
#[test]
fn a_ledger_is_opened_by_one_registry_at_a_time() {
    let dir = scratch_dir("locked");
    let path = dir.join("endpoints.json");
    let first = FileRegistry::open(&path).unwrap();
    let second = FileRegistry::open(&path).unwrap_err();
    assert_eq!(second.kind(), std::io::ErrorKind::WouldBlock);
    assert_eq!(
        second.to_string(),
        format!(
            "{}: in use by another registry ({}.lock is locked)",
            path.display(),
            path.display()
        )
    );
    drop(first);
    assert!(FileRegistry::open(&path).is_ok());
}

/// A new registry writes its ledger at once; one gone from where a registry kept it (its lock
/// file remains) is refused at open, since starting empty would make every retired name free
/// again, until the lock file is removed too.
#[test]
fn a_ledger_gone_from_where_a_registry_kept_it_is_refused_at_open() {
    let dir = scratch_dir("gone");
    let path = dir.join("endpoints.json");
    drop(FileRegistry::open(&path).unwrap());
    assert!(path.exists(), "written at open");
    std::fs::remove_file(&path).unwrap();
    let err = FileRegistry::open(&path).unwrap_err();
    assert_eq!(
        (err.kind(), err.to_string()),
        (
            std::io::ErrorKind::NotFound,
            format!(
                "{}: missing, though its lock file shows a registry kept it: restore it, or remove {}.lock to start an empty registry",
                path.display(),
                path.display()
            )
        )
    );
    std::fs::remove_file(dir.join("endpoints.json.lock")).unwrap();
    assert!(FileRegistry::open(&path).is_ok());
}

/// Each change keeps the ledger's permissions (a new one is its owner's alone), writes through
/// a symbolic link to the file it names (the link stays), and the lock holds under either
/// name.
#[cfg(unix)]
#[tokio::test]
async fn the_ledger_keeps_its_permissions_and_its_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("links");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let target = dir.join("real").join("endpoints.json");
    let link = dir.join("endpoints.json");
    drop(FileRegistry::open(&target).unwrap());
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&target), 0o600);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let registry = Arc::new(FileRegistry::open(&link).unwrap());
    let taken = FileRegistry::open(&target).unwrap_err();
    assert_eq!(taken.kind(), std::io::ErrorKind::WouldBlock, "{taken}");
    let addr = serve_api(Arc::clone(&registry)).await;
    let reply = create(
        addr,
        json!({"endpoint_name": "linked", "infer_service_id": "svc-deepseek"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(&target)
            .unwrap()
            .contains("\"linked\"")
    );
    assert_eq!(mode(&target), 0o640);
}

/// An empty management token would let in any request whose `X-Auth-Token` is empty.
#[test]
#[should_panic(expected = "a management token may not be empty")]
fn an_empty_management_token_is_refused() {
    let _ = ManagementAccess::new().token("", Account::new("acme"));
}

#[tokio::test]
async fn a_corrupt_registry_file_is_refused_at_open() {
    let dir = scratch_dir("corrupt");
    let path = dir.join("endpoints.json");
    std::fs::write(&path, b"{\"version\":1,").unwrap();
    let err = FileRegistry::open(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

/// Inference through an endpoint: the validator resolves its name, the endpoint's own RPM
/// applies inside the key's, and a refusal by it gives the key's slot back.
#[tokio::test]
async fn an_endpoint_is_callable_by_name_with_its_own_limits() {
    let registry = Arc::new(InMemoryRegistry::new());
    let keys = Arc::new(InMemoryKeyStore::new());
    let mut policy = KeyPolicy::new();
    policy.rpm = Some(300);
    keys.insert(KEY, policy).unwrap();
    let clock = ManualClock::new();
    let catalog = ModelCatalog::new()
        .model("DeepSeek-V3", 4096)
        .endpoints(Arc::clone(&registry));
    let inference = Router::new()
        .route(
            "/v1/chat/completions",
            post(|req: axum::extract::Request| async move {
                let route = req.extensions().get::<EndpointRoute>().cloned();
                axum::Json(json!({"served": route.as_ref().map(EndpointRoute::model), "via": route.as_ref().map(EndpointRoute::name)}))
            }),
        )
        .layer(TokenRateLimitLayer::with(MemoryStore::new(), clock.clone()).scope(LimitScope::Endpoint))
        .layer(TokenRateLimitLayer::with(MemoryStore::new(), clock.clone()))
        .layer(RequestSchemaValidatorLayer::new().models(catalog))
        .layer(BearerAuthLayer::new(keys));
    let api = ManagementApi::new(Arc::clone(&registry), access(), services());
    let app = mount(api)
        .merge(inference)
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    let addr = common::serve_axum(app).await;

    let chat = |model: &str| {
        Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {KEY}"))
            .header("content-type", "application/json")
            .header("x-request-id", FIXED_ID)
            .body(full(json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}).to_string()))
            .unwrap()
    };
    // Before the endpoint exists its name is no model.
    send(addr, chat("team-a")).await.assert_json(
        404,
        r#"{"error":{"code":"ModelArts.81009","message":"Invalid model.","param":null,"type":"NotFound"},"error_code":"ModelArts.81009","error_msg":"Invalid model."}"#,
    );
    let created = json_of(
        &create(
            addr,
            json!({"endpoint_name": "team-a", "infer_service_id": "svc-deepseek", "rpm": 1}),
        )
        .await,
    );

    let first = send(addr, chat("team-a")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(
        json_of(&first),
        json!({"served": "DeepSeek-V3", "via": "team-a"})
    );
    // The key's headers (300 RPM, burst 10) are what the client sees.
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("300"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("9"));

    // The endpoint's own RPM of 1 refuses the second, at once.
    let second = send(addr, chat("team-a")).await;
    second.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81101","message":"Too many requests, exceeded rate limit is 1 times per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81101","error_msg":"Too many requests, exceeded rate limit is 1 times per minute."}"#,
    );
    assert_eq!(second.header("x-ratelimit-limit-requests"), Some("1"));
    // One request a minute: the next in a minute (rounded up to the second).
    assert_eq!(second.header("retry-after"), Some("60"));

    // The key's slot came back: the model itself is still at 9 remaining before this one.
    let direct = send(addr, chat("DeepSeek-V3")).await;
    assert_eq!(json_of(&direct), json!({"served": null, "via": null}));
    assert_eq!(direct.header("x-ratelimit-remaining-requests"), Some("8"));

    // Its own TPM too: the limit edited to 20 tokens a minute and no RPM; each request
    // reserves its prompt plus `max_tokens` 5.
    let id = created["id"].as_str().unwrap();
    let edited = call(
        addr,
        "PUT",
        &format!("{BASE}/{id}"),
        Some(TOKEN),
        r#"{"rpm":null,"tpm":20}"#,
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text());
    assert_eq!(send(addr, chat("team-a")).await.status, StatusCode::OK);
    send(addr, chat("team-a")).await.assert_json(
        429,
        r#"{"error":{"code":"ModelArts.81103","message":"Too many requests. exceeded rate limit is 20 tokens per minute.","param":null,"type":"TooManyRequests"},"error_code":"ModelArts.81103","error_msg":"Too many requests. exceeded rate limit is 20 tokens per minute."}"#,
    );

    // Deleted, the name is no model any more.
    call(addr, "DELETE", &format!("{BASE}/{id}"), Some(TOKEN), "").await;
    assert_eq!(
        send(addr, chat("team-a")).await.status,
        StatusCode::NOT_FOUND
    );
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tower-maas-endpoint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// An endpoint limiter whose store fails closed: the 500 is a refusal like any other, so the
/// key's limiter outside gives its slot back.
#[tokio::test]
async fn an_inner_limiter_failing_closed_gives_the_keys_slot_back() {
    struct Down;
    impl tower_maas::limit::RateStore for Down {
        type Pending = std::future::Ready<tower_maas::limit::Outcome>;
        fn acquire(
            &self,
            _: tower_maas::limit::Acquire,
        ) -> tower_maas::limit::Acquired<Self::Pending> {
            tower_maas::limit::Acquired::Now(tower_maas::limit::Outcome::Unavailable)
        }
        fn reconcile(&self, _: tower_maas::limit::Reconcile) {}
    }
    let keys = Arc::new(InMemoryKeyStore::new());
    // RPM 300: a burst of 10.
    keys.insert(KEY, KeyPolicy::new().rpm(300)).unwrap();
    let clock = ManualClock::new();
    let app = Router::new()
        .route("/v1/chat/completions", post(|| async { "ok" }))
        .layer(TokenRateLimitLayer::with(Down, clock.clone()).scope(LimitScope::Endpoint))
        .layer(TokenRateLimitLayer::with(MemoryStore::new(), clock))
        .layer(axum::middleware::map_request(
            |mut req: axum::extract::Request| async move {
                if req.headers().contains_key("x-endpoint") {
                    req.extensions_mut()
                        .insert(EndpointRoute::new("ep", "DeepSeek-V3", 0).rpm(Some(5)));
                }
                req
            },
        ))
        .layer(BearerAuthLayer::new(keys))
        .layer(ErrorEnvelopeLayer::new().trust_incoming_request_id(true));
    let addr = common::serve_axum(app).await;
    let chat = |endpoint: bool| {
        let mut req = Request::post("/v1/chat/completions")
            .header("authorization", format!("Bearer {KEY}"))
            .header("x-request-id", FIXED_ID);
        if endpoint {
            req = req.header("x-endpoint", "1");
        }
        req.body(full("{}")).unwrap()
    };
    for _ in 0..3 {
        send(addr, chat(true)).await.assert_json(
            500,
            &format!(r#"{{"error_msg":"Internal server error.","error_code":"APIG.0201","request_id":"{FIXED_ID}"}}"#),
        );
    }
    // None of the three kept a slot of the key's burst of 10.
    let ok = send(addr, chat(false)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some("9"));
}

/// Mounted as a catch-all (a fallback, or hyper's service), the API answers a path that is
/// none of its own as the gateway answers an unknown API: APIG.0101.
#[tokio::test]
async fn a_path_that_is_not_the_apis_is_apig_0101() {
    use tower::Layer;

    let api = ManagementApi::new(InMemoryRegistry::new(), access(), services());
    let addr = common::serve_hyper(
        ErrorEnvelopeLayer::new()
            .trust_incoming_request_id(true)
            .layer(api),
    )
    .await;
    for path in [
        "/v2/other",
        "/v1//maas/services/custom-endpoint/endpoint",
        &format!("{BASE}/one/two"),
    ] {
        let request = Request::get(path)
            .header("x-auth-token", TOKEN)
            .header("x-request-id", FIXED_ID)
            .body(full(""))
            .unwrap();
        send(addr, request).await.assert_json(
            404,
            &format!(r#"{{"error_msg":"The API does not exist or has not been published in the environment","error_code":"APIG.0101","request_id":"{FIXED_ID}"}}"#),
        );
    }
}

/// An account given no quota may have 10 endpoints, MaaS's default; the 11th is 6297.
#[tokio::test]
async fn an_account_has_ten_endpoints_by_default() {
    let addr = serve_api(InMemoryRegistry::new()).await;
    let base = "/v1/p-beta/maas/services/custom-endpoint/endpoint";
    let make = async |n: usize| {
        let body = json!({"endpoint_name": format!("e{n}"), "infer_service_id": "svc-deepseek"});
        call(addr, "POST", base, Some(OTHER_TOKEN), &body.to_string()).await
    };
    for n in 0..10 {
        assert_eq!(make(n).await.status, StatusCode::OK, "endpoint {n}");
    }
    make(10).await.assert_json(
        400,
        &error_body("ModelArts.6297", "Custom endpoint number exceed quota"),
    );
}
