//! The whole stack in front of a real tonic gRPC server (the standard health service), called
//! by a real tonic client over a socket: refusals arrive as gRPC statuses carrying the MaaS code
//! and message. Served by axum (tonic's router) and by bare hyper.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use common::{FIXED_ID, empty, send_h2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use tower_maas::auth::{InMemoryKeyStore, KeyPolicy};
use tower_maas::limit::{ClientAddr, IpRateLimitLayer};
use tower_maas::stack::{MaasLayers, ServiceBuilderExt};
use tower_maas::{ErrorEnvelopeLayer, ThrottleWindow};

const KEY: &str = "sk-GrpcKey0000000000000000000000";

fn keys() -> Arc<InMemoryKeyStore> {
    let keys = Arc::new(InMemoryKeyStore::new());
    // RPM 60: a burst of two.
    keys.insert(KEY, KeyPolicy::new().rpm(60)).unwrap();
    keys
}

/// The stack through tonic's axum router, the client's address from axum's `ConnectInfo`.
async fn serve_axum(ip_limit: u64) -> SocketAddr {
    let (_, health) = tonic_health::server::health_reporter();
    let layers = MaasLayers::new(keys())
        .envelope(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))
        .ip_limit(
            IpRateLimitLayer::new(ip_limit, ThrottleWindow::MINUTE)
                .peer_addr(|e| e.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())),
        );
    let app = tonic::service::Routes::new(health)
        .into_axum_router()
        .layer(layers);
    common::serve_axum_with_peer(app).await
}

/// The stack around the bare generated service, served by hyper; the accept loop puts the
/// client's address where `IpRateLimit` looks by default.
async fn serve_hyper(ip_limit: u64) -> SocketAddr {
    let (_, health) = tonic_health::server::health_reporter();
    let service = ServiceBuilder::new()
        .maas(
            MaasLayers::new(keys())
                .envelope(ErrorEnvelopeLayer::new().trust_incoming_request_id(true))
                .ip_limit(IpRateLimitLayer::new(ip_limit, ThrottleWindow::MINUTE)),
        )
        .service(health);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let service = ServiceBuilder::new()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ClientAddr(peer));
                    req
                })
                .service(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    addr
}

async fn client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn check(
    client: &mut HealthClient<Channel>,
    key: Option<&str>,
) -> Result<ServingStatus, (Code, String)> {
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    if let Some(key) = key {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    match client.check(req).await {
        Ok(res) => Ok(res.into_inner().status()),
        Err(status) => Err((status.code(), status.message().to_owned())),
    }
}

async fn refusals_are_grpc_statuses(addr: SocketAddr) {
    let mut client = client(addr).await;
    assert_eq!(
        check(&mut client, None).await,
        Err((
            Code::Unauthenticated,
            "ModelArts.81002: Failed to get the authorization header.".to_owned()
        ))
    );
    assert_eq!(
        check(&mut client, Some("sk-nope")).await,
        Err((
            Code::Unauthenticated,
            "ModelArts.81003: Invalid authorization header.".to_owned()
        ))
    );
    assert_eq!(
        check(&mut client, Some(KEY)).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut client, Some(KEY)).await,
        Ok(ServingStatus::Serving)
    );
    assert_eq!(
        check(&mut client, Some(KEY)).await,
        Err((
            Code::ResourceExhausted,
            "ModelArts.81101: Too many requests, exceeded rate limit is 60 times per minute."
                .to_owned()
        ))
    );
}

#[tokio::test]
async fn a_tonic_service_behind_the_stack_served_by_axum() {
    refusals_are_grpc_statuses(serve_axum(100).await).await;
}

#[tokio::test]
async fn a_tonic_service_behind_the_stack_served_by_bare_hyper() {
    refusals_are_grpc_statuses(serve_hyper(100).await).await;
}

#[tokio::test]
async fn the_per_ip_limit_is_a_grpc_status_too() {
    for addr in [serve_axum(1).await, serve_hyper(1).await] {
        let mut client = client(addr).await;
        assert_eq!(
            check(&mut client, Some(KEY)).await,
            Ok(ServingStatus::Serving)
        );
        assert_eq!(
            check(&mut client, Some(KEY)).await,
            Err((
                Code::ResourceExhausted,
                "APIG.0308: The throttling threshold has been reached: policy ip over ratelimit,limit:1,time:1 minute".to_owned()
            ))
        );
    }
}

/// The wire form: a trailers-only response, HTTP 200, no body, the request id kept.
#[tokio::test]
async fn a_refusal_is_a_trailers_only_response() {
    let addr = serve_hyper(100).await;
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-request-id", FIXED_ID)
        .body(empty())
        .unwrap();
    let reply = send_h2(addr, req).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    assert_eq!(
        headers,
        [
            ("content-type", "application/grpc"),
            (
                "grpc-message",
                "ModelArts.81002: Failed to get the authorization header."
            ),
            ("grpc-status", "16"),
            ("x-request-id", FIXED_ID),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
}
