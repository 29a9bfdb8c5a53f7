//! Serving the gateway on a listener: each connection's client bounded in time, and a graceful
//! stop.
//!
//! `axum::serve` would do, but it gives hyper no timer: a client could then hold a connection
//! open forever by sending its request head one byte at a time, or stop in the middle of its
//! body while the layers that read it hold what came. Here a client has `client_timeout` to send
//! its head (hyper's `header_read_timeout`) and then each next piece of its body; past that, the
//! connection is closed, or the body fails and the layer reading it answers as FastAPI does
//! (`{"detail":"There was an error parsing the body"}`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
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

/// Serves `app` on `listener` until `stop` completes, then stops accepting and waits for the
/// connections' requests in flight to finish. Each request carries its peer's address as
/// `ConnectInfo<SocketAddr>`, as `axum::serve` gives it.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    client_timeout: Duration,
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    builder.http2().timer(TokioTimer::new());
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
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
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
            if let Err(err) = connection.await {
                tracing::debug!("connection: {err}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A client that sent nothing of its body for too long.
fn client_stalled() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the client stopped sending its body",
    ))
}
