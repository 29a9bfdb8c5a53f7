//! Real servers on ephemeral ports and a raw HTTP/1.1 client, shared by the socket tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request id the tests trust the envelope to keep, so whole APIG bodies are known.
pub const FIXED_ID: &str = "0123456789abcdef0123456789abcdef";

/// FastAPI's answer to a body it cannot read.
pub const UNPARSABLE: &str = r#"{"detail":"There was an error parsing the body"}"#;

/// Writes `sent` as it is on a new connection, then ends the client's side when `close` says
/// so, and reads what comes back until the server closes: at most 5 s, so that a server that
/// waits for more fails the test rather than hangs it. A connection reset ends the reading.
pub async fn raw_http1(addr: SocketAddr, sent: &str, close: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent.as_bytes()).await.unwrap();
    if close {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answered or closed within 5 s")
    .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Serves an axum router on 127.0.0.1 and an ephemeral port.
pub async fn serve_axum(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves an axum router, or a service that takes and gives axum's body types as the example
/// gateway does, that reads the peer's address (`ConnectInfo<SocketAddr>`), as the per-IP
/// limit and the gateway do.
pub async fn serve_axum_with_peer<S>(app: S) -> SocketAddr
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .await
        .unwrap()
    });
    addr
}

/// Serves a tower service with bare hyper (HTTP/1.1 and HTTP/2 by preface).
pub async fn serve_hyper<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// What came back.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `x-request-id` header, checked to have a request id's form (32 lowercase hex
    /// digits): a test that builds its expected body from it would otherwise pass on any id,
    /// an empty one included, written alike in the header and the body.
    pub fn request_id(&self) -> &str {
        let id = self.header("x-request-id").expect("x-request-id");
        assert!(
            id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "x-request-id {id:?}"
        );
        id
    }

    /// Asserts a JSON refusal: status, content type, content length and the whole body.
    pub fn assert_json(&self, status: u16, body: &str) {
        assert_eq!(self.status.as_u16(), status, "status; body {}", self.text());
        assert_eq!(self.text(), body);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(
            self.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
}

/// Sends one request over HTTP/1.1 on a new connection.
pub async fn send<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    collect(res).await
}

/// Sends one request over HTTP/2 (prior knowledge) on a new connection.
pub async fn send_h2<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let res = sender.send_request(req).await.unwrap();
    collect(res).await
}

async fn collect(res: Response<Incoming>) -> Reply {
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A POST with a JSON body.
pub fn post(uri: &str, body: &str) -> http::request::Builder {
    Request::post(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("content-length", body.len())
}

/// A full body.
pub fn full(body: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(body.into())
}

/// An empty body.
pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// A body sent in chunks, with no length known beforehand (HTTP/1.1 chunked encoding).
pub fn chunked(chunks: &[&'static [u8]]) -> Chunked {
    Chunked(chunks.iter().map(|c| Bytes::from_static(c)).collect())
}

/// See [`chunked`].
pub struct Chunked(std::collections::VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// A body of the given frames; an `Err` frame breaks it there.
pub fn frames(frames: Vec<Result<&'static [u8], &'static str>>) -> Frames {
    Frames(frames.into_iter().collect())
}

/// See [`frames`].
pub struct Frames(std::collections::VecDeque<Result<&'static [u8], &'static str>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|f| match f {
            Ok(data) => Ok(hyper::body::Frame::data(Bytes::from_static(data))),
            Err(why) => Err(std::io::Error::other(why)),
        }))
    }
}

/// Sends one request and reads what arrives, tolerating a body that breaks off; a response
/// whose head never arrived is `502` with nothing else.
pub async fn send_lossy<B>(addr: SocketAddr, req: Request<B>) -> (StatusCode, HeaderMap, Bytes)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let Ok(res) = sender.send_request(req).await else {
        return (StatusCode::BAD_GATEWAY, HeaderMap::new(), Bytes::new());
    };
    let (parts, mut body) = res.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(chunk) = frame.data_ref() {
            data.extend_from_slice(chunk);
        }
    }
    (parts.status, parts.headers, Bytes::from(data))
}

/// A log's output kept in memory, for the tests that read log lines back; clones share it.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes()).unwrap()
    }

    /// Everything written so far, as bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `text` is a log line's timestamp: `2026-11-22T14:03:01.029568Z`.
pub fn is_timestamp(text: &str) -> bool {
    let shape = "0000-00-00T00:00:00.000000Z";
    text.len() == shape.len()
        && text.bytes().zip(shape.bytes()).all(|(t, s)| {
            if s == b'0' {
                t.is_ascii_digit()
            } else {
                t == s
            }
        })
}

/// The example gateway's binary, which `cargo test` builds with the examples (with the
/// features the tests have).
pub fn gateway_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    profile
        .join("examples")
        .join(format!("gateway{}", std::env::consts::EXE_SUFFIX))
}

/// The example gateway's binary serving `config` (TOML with no `listen`: a free port is
/// chosen) until told to stop; killed if dropped still running, its configuration file removed.
#[cfg(unix)]
pub struct GatewayProcess {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    config: std::path::PathBuf,
}

#[cfg(unix)]
impl GatewayProcess {
    /// Started and listening.
    pub async fn start(config: &str) -> Self {
        let binary = gateway_binary();
        assert!(
            binary.exists(),
            "{} is built by `cargo test` (or `cargo build --examples`)",
            binary.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = std::env::temp_dir().join(format!(
            "tower-maas-gateway-{}-{port}.toml",
            std::process::id()
        ));
        std::fs::write(&path, format!("listen = \"127.0.0.1:{port}\"\n{config}")).unwrap();
        let child = tokio::process::Command::new(&binary)
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            addr,
            child,
            config: path,
        }
    }

    /// SIGTERM: it stops taking connections and lets the requests in flight finish.
    pub fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Whether it has exited yet.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Its exit, which must come `within`.
    pub async fn exit(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the gateway did not exit in time")
            .unwrap()
    }
}

#[cfg(unix)]
impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}
