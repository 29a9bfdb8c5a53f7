//! Serving the gateway on a listener: connections bounded in number, each connection's client
//! bounded in time, and a graceful stop.
//!
//! `axum::serve` would do, but it gives hyper no timer: a client could then hold a connection
//! open forever by sending nothing, or its request head one byte at a time, or stop in the
//! middle of its body while the layers that read it hold what came. Here a client has
//! `client` time from connecting to send its first request head, then to send each later head
//! (hyper's `header_read_timeout`) and each next piece of a body; an HTTP/2 client must answer
//! pings as often, and a connection idle for one to two such periods (no request begun, no
//! answer still going) is shut down gracefully, HTTP/2 too, whose pings would keep it. Past that the
//! connection is closed, or the body fails and the layer reading it refuses it as a
//! body it cannot read (FastAPI's `{"detail":"There was an error parsing the body"}`, or
//! 81001 when `BearerAuth` reads it for a key limited to some models). A client that takes
//! nothing of its answers loses its connection, and the answers' upstreams are let go: over
//! HTTP/1 once a write has waited `client`; over HTTP/2, which grants window only once half of
//! it is read (2 MiB for hyper's client), after one to two periods in which an answer was
//! ready and the client took nothing. At most `connections`
//! connections are served at once; past that, new ones wait in the listener's backlog until
//! one closes. On the stop signal, requests in flight have `grace` to finish.
//!
//! An HTTP/2 client can still stall one stream while it takes another's answer: the check is
//! per connection. hyper bounds what waits for it (the stream's send buffer) and the streams
//! per connection, and `connections` the rest.
//!
//! The stop waits for hyper's own tasks as well as for the connections: an HTTP/2 stream is
//! answered in a task of its own, which drops the answer (and so settles its limiters) a moment
//! after its connection may have ended.
//!
//! Connections are served where they are accepted (tokio's shared, work-stealing runtime), or
//! handed to [`Workers`]: single-threaded runtimes, one per core, each keeping its connections
//! for their whole life, as Envoy's worker threads keep theirs. A request then runs on one
//! core: no worker wakes another to steal it, and what it allocates is freed on the thread
//! that allocated it. Under load that is about a third more requests a second for the gateway
//! (BENCHMARKS.md, session 11); the price is that a connection's requests never move to a core
//! with less to do. Each worker proxies through pooled upstream connections of its own
//! (`proxy.rs`); a Redis store's one connection, which every worker's decisions share, runs on
//! the accepting runtime (`RedisStoreBuilder::runtime`), never held up by a busy worker.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures_util::future::Either;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower::util::Oneshot;
use tower_maas::BoxError;

use crate::budget::{Budget, Budgeted, Held};
use crate::idle::{IdleTimeout, SendDeadline};

/// How many clients the gateway serves at once, how long each may keep it waiting, and how
/// long requests in flight may keep it from stopping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// From connecting to the first request's whole head, for each later head, between two
    /// pieces of a body, and for each write of an answer to be taken.
    pub(crate) client: Duration,
    /// From the stop signal to the last connection closed.
    pub(crate) grace: Duration,
    /// Connections served at once (at most `Semaphore::MAX_PERMITS`).
    pub(crate) connections: usize,
    /// Bytes of request bodies held at once, all requests together (`budget.rs`).
    pub(crate) buffered: usize,
}

/// What the loop serves (the gateway, or the bare mock): a copy for each connection, called
/// from whichever thread serves it.
pub(crate) trait App:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `app` on `listener` until `stop` completes, then stops accepting and waits, at most
/// `bounds.grace`, for the connections' requests in flight to finish. Each request carries
/// its peer's address as `ConnectInfo<SocketAddr>`, as `axum::serve` gives it. A connection
/// is served by the one of `workers` with the fewest connections, or, without workers, on the
/// runtime that runs this.
pub(crate) async fn serve<S: App>(
    listener: TcpListener,
    app: S,
    bounds: Bounds,
    workers: Option<Arc<Workers>>,
    stop: impl Future<Output = ()>,
) {
    let client_timeout = bounds.client;
    // Every connection's task and hyper's own: all ended is all the requests done.
    let tasks = TaskTracker::new();
    let mut builder = auto::Builder::new(Tracked(tasks.clone()));
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(client_timeout)
        .keep_alive_timeout(client_timeout);
    let (stopping, stop_seen) = tokio::sync::watch::channel(Phase::Serving);
    // Each connection's task holds a permit: a connection is accepted only with one in hand.
    let room = Arc::new(tokio::sync::Semaphore::new(
        bounds.connections.min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let budget = Budget::new(bounds.buffered);
    let mut stop = pin!(stop);
    let mut accept_failed = crate::log::Throttle::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&room).acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, say: wait a little rather than spin, and say so
                // (at most once a second: the condition lasts), since connections then wait
                // in the kernel's queue with nothing else to show for it.
                Err(err) => {
                    if let Some(unlogged) = accept_failed.due() {
                        tracing::warn!(unlogged, "accepting a connection failed: {err}");
                    }
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
        let connection = Connection {
            app: app.clone(),
            builder: builder.clone(),
            peer,
            client: client_timeout,
            stop_seen: stop_seen.clone(),
            permit,
            budget: budget.clone(),
        };
        // Tracked with hyper's own tasks: the stop waits for both alike.
        match &workers {
            None => {
                tasks.spawn(connection.serve(stream));
            }
            Some(workers) => {
                // Off this runtime's reactor and onto the worker's: the socket's readiness
                // then wakes the worker that serves it, not this thread.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(err) => {
                        tracing::debug!("accept: {err}");
                        continue;
                    }
                };
                let (worker, load) = workers.least_loaded();
                tasks.spawn_on(
                    async move {
                        let _load = load;
                        match TcpStream::from_std(stream) {
                            Ok(stream) => connection.serve(stream).await,
                            Err(err) => tracing::debug!("accept: {err}"),
                        }
                    },
                    worker,
                );
            }
        }
    }
    drop(listener);
    let _ = stopping.send(Phase::Stopping);
    tasks.close();
    if tokio::time::timeout(bounds.grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: dropping the requests still in flight");
        // Dropped here, while the runtime still runs, what they hold is let go on it: a
        // limiter's settlement is sent, not lost with the runtime.
        let _ = stopping.send(Phase::Abandoning);
        let _ = tokio::time::timeout(ABANDON_WAIT, tasks.wait()).await;
    }
}

/// An accepted connection, with what serving it needs, wherever it is served.
struct Connection<S> {
    app: S,
    builder: auto::Builder<Tracked>,
    peer: SocketAddr,
    client: Duration,
    stop_seen: tokio::sync::watch::Receiver<Phase>,
    /// Its room among the connections served at once.
    permit: OwnedSemaphorePermit,
    /// The room its requests' bodies take, with every other connection's.
    budget: Budget,
}

impl<S: App> Connection<S> {
    /// Serves the connection's requests until it ends (see [`watch`]).
    async fn serve(self, stream: TcpStream) {
        let Self {
            app,
            builder,
            peer,
            client,
            stop_seen,
            permit: _permit,
            budget,
        } = self;
        // The connection's own copy, called in place (see `call_in_place`).
        let app = RefCell::new(app);
        let activity = Arc::new(Activity::default());
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            // Over HTTP/1 a client that takes nothing blocks a write (`SendDeadline`); over
            // HTTP/2 it grants no window, which blocks nothing: its answers are watched.
            let busy = Busy::enter(&requests, request.version() == http::Version::HTTP_2);
            let held = Arc::new(Held::default());
            let mut request = request.map(|body| {
                let body = IdleTimeout::new(body, client, client_stalled);
                axum::body::Body::new(Budgeted::new(body, &budget, Arc::clone(&held), client))
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            let answer = call_in_place(&app, request);
            // Busy until the answer's body has ended: a long stream is no idleness.
            async move {
                let answer = answer.await?;
                // Decided: the layers have let the body go.
                held.release();
                Ok::<_, Infallible>(answer.map(|body| Answer { body, busy }))
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(SendDeadline::new(stream, client)),
                service,
            )
            .into_owned();
        if let Err(err) = watch(connection, &activity, client, stop_seen).await {
            tracing::debug!("connection: {err}");
        }
    }
}

/// Single-threaded runtimes, each on a thread of its own, that serve the connections handed to
/// them. Dropping them stops their threads, and whatever the runtimes still run: it waits for
/// the threads to end, so it belongs outside any runtime (never on a worker, which would wait
/// for itself).
pub(crate) struct Workers(Vec<Worker>);

struct Worker {
    runtime: tokio::runtime::Handle,
    /// Connections it serves now.
    connections: Arc<AtomicUsize>,
    /// Ends the thread's `block_on`, sent or dropped.
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub(crate) fn start(count: usize) -> std::io::Result<Self> {
        let mut workers = Self(Vec::new());
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            // A current-thread runtime runs its tasks only inside `block_on`: this thread's
            // whole life.
            let thread = std::thread::Builder::new()
                // Linux keeps 15 bytes of a thread's name (`top`, `perf`, `sched.sh`).
                .name(format!("gw-worker-{index}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            workers.0.push(Worker {
                runtime: handle,
                connections: Arc::new(AtomicUsize::new(0)),
                stop,
                thread,
            });
        }
        Ok(workers)
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The runtime of worker `index`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn runtime(&self, index: usize) -> &tokio::runtime::Handle {
        &self.0[index].runtime
    }

    /// The connections each serves now.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn connections(&self) -> Vec<usize> {
        self.0
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .collect()
    }

    /// The worker with the fewest connections (the first of them on a tie), and the count
    /// that a new connection holds there until it ends.
    fn least_loaded(&self) -> (&tokio::runtime::Handle, Load) {
        let worker = self
            .0
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed))
            .unwrap_or_else(|| unreachable!("`start` makes at least one worker"));
        worker.connections.fetch_add(1, Ordering::Relaxed);
        (&worker.runtime, Load(Arc::clone(&worker.connections)))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in self.0.drain(..) {
            let _ = worker.stop.send(());
            if worker.thread.join().is_err() {
                tracing::warn!("a worker thread panicked");
            }
        }
    }
}

/// A connection counted on its worker.
struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Spawns hyper's own tasks (an HTTP/2 connection's streams, which drop their answers and
/// settle their limiters after their connection may have ended) tracked, for the stop to wait
/// for.
#[derive(Clone)]
struct Tracked(TaskTracker);

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        self.0.spawn(task);
    }
}

/// Calls a connection's service in place when it is ready at once, as the gateway always is:
/// a clone for every request would count every `Arc` in its layers up and down again, counts
/// that the cores serving at once pass back and forth. One that is not ready is cloned and
/// waited on, as `oneshot` does.
fn call_in_place<S, R>(app: &RefCell<S>, request: R) -> Either<S::Future, Oneshot<S, R>>
where
    S: tower::Service<R> + Clone,
{
    let mut app = app.borrow_mut();
    match app.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => Either::Left(app.call(request)),
        // An error comes out of the clone's own readiness, as it would have.
        Poll::Ready(Err(_)) | Poll::Pending => Either::Right(app.clone().oneshot(request)),
    }
}

/// Where a stop has got to, as the connections see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Requests in flight may finish; no new one is taken.
    Stopping,
    /// The grace period is over: connections are dropped with whatever they still hold.
    Abandoning,
}

/// How long connections told to drop everything get to do it.
const ABANDON_WAIT: Duration = Duration::from_secs(1);

/// What a connection's requests are doing, for its idle check.
#[derive(Debug, Default)]
struct Activity {
    /// A request has begun on it, ever.
    asked: AtomicBool,
    /// A request has begun or an answer ended since the last check.
    stirred: AtomicBool,
    /// Requests whose answer has not ended.
    busy: AtomicUsize,
    /// HTTP/2 answers that gave a piece which the connection has not come back for since:
    /// while the client grants no window, none is asked for the next.
    owing: AtomicUsize,
    /// An HTTP/2 answer was asked for a piece since the last check.
    taken: AtomicBool,
}

/// A request from the service's call until its answer's body ends (or is dropped).
struct Busy {
    activity: Arc<Activity>,
    /// Its answer is watched for a client that takes nothing of it.
    watched: bool,
    /// Its answer is among those [`Activity::owing`].
    owing: bool,
}

impl Busy {
    fn enter(activity: &Arc<Activity>, watched: bool) -> Self {
        activity.asked.store(true, Ordering::Relaxed);
        activity.stirred.store(true, Ordering::Relaxed);
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self {
            activity: Arc::clone(activity),
            watched,
            owing: false,
        }
    }

    /// The answer was asked for a piece, and `gave` one.
    fn asked(&mut self, gave: bool) {
        if !self.watched {
            return;
        }
        // Stored only when it changes: the line is shared with the connection's other streams.
        if !self.activity.taken.load(Ordering::Relaxed) {
            self.activity.taken.store(true, Ordering::Relaxed);
        }
        if gave != self.owing {
            self.owing = gave;
            // Release: a check that sees this count sees `taken` set (see `watch`).
            if gave {
                self.activity.owing.fetch_add(1, Ordering::Release);
            } else {
                self.activity.owing.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.owing {
            self.activity.owing.fetch_sub(1, Ordering::Relaxed);
        }
        self.activity.busy.fetch_sub(1, Ordering::Relaxed);
        self.activity.stirred.store(true, Ordering::Relaxed);
    }
}

pin_project! {
    /// An answer's body, holding its request [`Busy`] until it ends.
    struct Answer {
        #[pin]
        body: axum::body::Body,
        busy: Busy,
    }
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        this.busy.asked(matches!(polled, Poll::Ready(Some(Ok(_)))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Drives a connection to its end: dropped when no request has begun within `client` of
/// connecting (hyper's head timer starts only once it knows the protocol, so a client that
/// sends nothing, or half of HTTP/2's preface, is bounded here); shut down gracefully once a
/// whole `client` period has passed with no request begun, none busy and no answer ended (an
/// HTTP/2 client that answers pings would otherwise keep it forever), and at the stop. Dropped
/// too once a whole period has passed in which an HTTP/2 answer had a piece ready and the
/// connection took nothing of any answer: a client that grants no window stalls its streams
/// without blocking a single write. This rests on hyper (1.12) asking an HTTP/2 answer for a
/// piece before it waits for window, so that a piece is ready and owed; a hyper that waited
/// for window first would never ask, and such a client would keep its connection.
async fn watch<C>(
    connection: C,
    activity: &Activity,
    client: Duration,
    mut stop_seen: tokio::sync::watch::Receiver<Phase>,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut connection = pin!(connection);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + client, client);
    // A late check counts a whole period from when it runs, not a burst of catch-up checks.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = stop_seen.changed() => break,
            _ = ticks.tick() => {
                if !activity.asked.load(Ordering::Relaxed) {
                    return Ok(());
                }
                // The count first: an answer that became owing after the last check was
                // asked, and that shows in `taken` (Acquire pairs with `Busy::asked`).
                let owing = activity.owing.load(Ordering::Acquire);
                let taken = activity.taken.swap(false, Ordering::Relaxed);
                if owing > 0 && !taken {
                    tracing::debug!("connection: the client took nothing of its answers");
                    return Ok(());
                }
                let stirred = activity.stirred.swap(false, Ordering::Relaxed);
                if !stirred && activity.busy.load(Ordering::Relaxed) == 0 {
                    break;
                }
            }
        }
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        result = connection.as_mut() => result,
        _ = stop_seen.wait_for(|phase| *phase == Phase::Abandoning) => Ok(()),
    }
}

/// A client that sent nothing of its body for too long.
fn client_stalled() -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the client stopped sending its body",
    ))
}
