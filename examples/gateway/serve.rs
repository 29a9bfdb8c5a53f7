//! Serving the gateway on a listener: each connection's client bounded in time, and a graceful
//! stop.
//!
//! `axum::serve` would do, but it gives hyper no timer: a client could then hold a connection
//! open forever by sending nothing, or its request head one byte at a time, or stop in the
//! middle of its body while the layers that read it hold what came. Here a client has
//! `client` time from connecting to send its first request head, then to send each later head
//! (hyper's `header_read_timeout`, which also ends an idle HTTP/1 keep-alive connection) and
//! each next piece of a body; an HTTP/2 client must answer pings as often. Past that the
//! connection is closed, or the body fails and the layer reading it refuses it as a
//! body it cannot read (FastAPI's `{"detail":"There was an error parsing the body"}`, or
//! 81001 when `BearerAuth` reads it for a key limited to some models). On the stop signal,
//! requests in flight have `grace` to finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_maas::BoxError;

use crate::idle::IdleTimeout;

/// How long a client may keep the gateway waiting, and requests in flight may keep it from
/// stopping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// From connecting to the first request's whole head, for each later head, and between two
    /// pieces of a body.
    pub(crate) client: Duration,
    /// From the stop signal to the last connection closed.
    pub(crate) grace: Duration,
}

/// Serves `app` on `listener` until `stop` completes, then stops accepting and waits, at most
/// `deadlines.grace`, for the connections' requests in flight to finish. Each request carries
/// its peer's address as `ConnectInfo<SocketAddr>`, as `axum::serve` gives it.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    deadlines: Deadlines,
    stop: impl Future<Output = ()>,
) where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let client_timeout = deadlines.client;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(client_timeout)
        .keep_alive_timeout(client_timeout);
    let graceful = GracefulShutdown::new();
    let mut stop = pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: wait a little rather than spin.
                Err(err) => {
                    tracing::debug!("accept: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Responses that cross the layers may leave in more than one write; without
        // TCP_NODELAY Nagle's algorithm holds the later ones back until the client
        // acknowledges the first.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {err}");
        }
        let app = app.clone();
        let asked = Arc::new(AtomicBool::new(false));
        let first_request = Arc::clone(&asked);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            let mut request = request.map(|body| {
                axum::body::Body::new(IdleTimeout::new(body, client_timeout, client_stalled))
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            // hyper's head timer starts only once it knows the protocol: a client that sends
            // nothing, or half of HTTP/2's preface, is bounded here.
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = tokio::time::sleep(client_timeout) => {
                    if !asked.load(Ordering::Relaxed) {
                        return;
                    }
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!("connection: {err}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(deadlines.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("stopping with connections still open after the grace period");
    }
}

/// A client that sent nothing of its body for too long.
fn client_stalled() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the client stopped sending its body",
    ))
}
