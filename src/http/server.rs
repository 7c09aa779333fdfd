//! Serving one listener: HTTP/1 connections with the limits a daemon facing the
//! internet needs, which `axum::serve` does not set (it runs without a timer).
//!
//! - **Header timeout**: a request's head must arrive within `header_timeout` (hyper's
//!   own timer, from the moment the connection opens or the last answer was sent, so
//!   it also bounds a keep-alive connection's wait for its next request).
//! - **Idle timeout**: a connection with no request in flight and no byte read or
//!   written for `idle_timeout` is closed, whatever hyper is waiting for (it matters
//!   when `header_timeout` is set longer).
//! - **Connection cap**: at most `max_connections` per listener. At the cap, the
//!   oldest idle connection is closed to make room, and a new connection waits in the
//!   kernel's backlog until one ends: idle sockets cannot lock everyone else out.
//! - Bodies (read timeout, size, the budget of bytes buffered at once) are the
//!   [`super::limits`] middleware's, since only a handler knows when it is done.
//!
//! When a limit bites it says so in the log, at most once per [`LOG_EVERY`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tracing::{error, warn};

use crate::config::ServerConfig;
use crate::lock;
use crate::shutdown::Shutdown;

/// The most hyper reads of a request head: above our own header limit (answered
/// 431 in JSON by the limits middleware), so that hyper's bare 431 is only for heads
/// far beyond it.
const MAX_HEAD_BUFFER: usize = 1024 * 1024;
/// Headers hyper parses at most (it answers a bare 431 beyond); ours is lower.
const MAX_HEADERS: usize = 1000;
/// A limit that bites is logged at most this often (per listener and limit).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub fn from_config(config: &ServerConfig) -> Self {
        Self {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections.max(1),
        }
    }
}

/// Logs a warning at most once per [`LOG_EVERY`], counting what it did not log.
pub struct RareLog {
    started: Instant,
    /// Milliseconds after `started` of the last line logged (0: never).
    last: AtomicU64,
    skipped: AtomicU64,
}

impl Default for RareLog {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

impl RareLog {
    /// Calls `log` with how many occurrences went unlogged since the last time, if it
    /// is time to log again.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.skipped.swap(0, Ordering::Relaxed));
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the listener knows of one open connection.
struct Tracked {
    /// Requests being answered on it.
    in_flight: Arc<AtomicUsize>,
    /// Asks the connection to close once its request in flight (if any) is answered.
    close: Arc<Notify>,
}

/// The open connections of a listener, oldest first.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Tracked>>,
}

impl Connections {
    /// Closes the oldest connection with no request in flight; whether there was one.
    fn close_oldest_idle(&self) -> bool {
        let open = lock(&self.open);
        match open
            .values()
            .find(|c| c.in_flight.load(Ordering::Acquire) == 0)
        {
            Some(idle) => {
                idle.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` fires, then lets the requests in
/// flight finish (idle connections close at once).
pub fn serve(
    what: String,
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let connections = Arc::new(Connections::default());
        let at_cap = RareLog::default();
        let slow_heads = Arc::new(RareLog::default());
        let mut tasks = JoinSet::new();
        loop {
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    at_cap.warn(|skipped| {
                        warn!(
                            listener = %what,
                            max_connections = limits.max_connections,
                            times_since_last = skipped,
                            "connection cap reached: closing idle connections, new ones wait"
                        )
                    });
                    connections.close_oldest_idle();
                    tokio::select! {
                        permit = Arc::clone(&slots).acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                        _ = shutdown.wait() => break,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    error!(listener = %what, error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let id = connections.next_id.fetch_add(1, Ordering::Relaxed);
            let tracked = Tracked {
                in_flight: Arc::default(),
                close: Arc::default(),
            };
            let (in_flight, close) = (Arc::clone(&tracked.in_flight), Arc::clone(&tracked.close));
            let answered = Arc::new(AtomicU64::new(0));
            lock(&connections.open).insert(id, tracked);
            let connections = Arc::clone(&connections);
            let (router, limits, shutdown) = (router.clone(), limits.clone(), shutdown.clone());
            let slow_heads = Arc::clone(&slow_heads);
            let what = what.clone();
            tasks.spawn(async move {
                let served = serve_connection(
                    stream,
                    router,
                    &limits,
                    Requests {
                        in_flight,
                        answered: Arc::clone(&answered),
                    },
                    close,
                    shutdown,
                )
                .await;
                // hyper also times a keep-alive connection's wait for its next request
                // out this way, which is no one's fault: only a connection that never
                // completed a request head is worth a line.
                if let Err(error) = served
                    && error.is_timeout()
                    && answered.load(Ordering::Relaxed) == 0
                {
                    slow_heads.warn(|skipped| {
                        warn!(listener = %what, timeout = ?limits.header_timeout, times_since_last = skipped, "a client did not send its request head in time: connection closed")
                    });
                }
                lock(&connections.open).remove(&id);
                drop(permit);
            });
            // Reap finished connection tasks as we go.
            while tasks.try_join_next().is_some() {}
        }
        drop(listener);
        // Shutting down: every connection was told (they watch `shutdown` too).
        while tasks.join_next().await.is_some() {}
    })
}

/// What a connection counts of its requests.
struct Requests {
    /// Being answered now.
    in_flight: Arc<AtomicUsize>,
    /// Whose head arrived, since the connection opened.
    answered: Arc<AtomicU64>,
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: &ConnectionLimits,
    requests: Requests,
    close: Arc<Notify>,
    shutdown: Shutdown,
) -> Result<(), hyper::Error> {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let Requests {
        in_flight,
        answered,
    } = requests;
    let counter = Arc::clone(&in_flight);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let request = request.map(Body::new);
        answered.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight::enter(&counter);
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(guard);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .max_headers(MAX_HEADERS)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        // While a request is answered the connection is not idle: look again later.
        let idle_deadline = if in_flight.load(Ordering::Acquire) == 0 {
            activity.last() + limits.idle_timeout
        } else {
            Instant::now() + limits.idle_timeout
        };
        tokio::select! {
            served = connection.as_mut() => return served,
            _ = close.notified(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = shutdown.wait(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_deadline.into()), if !closing => {
                if in_flight.load(Ordering::Acquire) == 0 && activity.last().elapsed() >= limits.idle_timeout {
                    // Idle: nothing read or written, no request being answered.
                    return Ok(());
                }
            }
        }
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a connection last read or wrote a byte.
struct Activity {
    started: Instant,
    /// Milliseconds after `started`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A socket that records its activity.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
