//! Where the request log's lines go: one shared buffer that a thread of its own writes out in
//! batches.
//!
//! `tracing-appender`'s non-blocking writer hands every line to its thread through a channel,
//! and that thread wakes, spins (`sched_yield`) and parks again for nearly every line: under
//! load that was about 25 000 `sched_yield` and 13 000 `futex` calls a second, and the writer
//! preempting the tokio workers. Here a request's line is appended to a buffer under a mutex
//! held for a `memcpy`; only the first line of a batch wakes the writer, which then waits a
//! moment for more before writing them all with one `write`. So a burst of lines costs one
//! wake-up, and an idle gateway costs none.
//!
//! A slow terminal or pipe never holds a request: while the writer is stuck, lines gather up to
//! [`LIMIT`] bytes, and past that they are dropped and counted, and the count is written when
//! the output moves again.

use std::io::{self, Write};
use std::mem;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer waits, after a batch's first line, for the lines that follow it: long
/// enough to gather hundreds of lines under load, short enough that a line shows at once to
/// someone watching.
const GATHER: Duration = Duration::from_millis(10);

/// The most that waits to be written while a batch is being written (which holds as much
/// again at most); beyond it lines are dropped, and counted.
pub(crate) const LIMIT: usize = 8 << 20;

/// How long the exit waits for the last lines to be written: an output that is stuck (a pipe
/// nobody reads) must not keep the process from exiting.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a batch buffer keeps of its capacity once written: a burst while the output was stuck
/// must not hold its megabytes for ever.
const KEEP: usize = 1 << 20;

/// The handle `tracing_subscriber::fmt().with_writer(..)` takes: every write is one whole
/// line, as the fmt layer formats an event into its own buffer and writes it in one call.
#[derive(Clone, Debug)]
pub(crate) struct BatchWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer thread when dropped: keep it alive in `main`.
#[derive(Debug)]
pub(crate) struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    first_line: Condvar,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    dropped: u64,
    closing: bool,
    /// The writer thread has written its last batch.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves at worst a partial line; the log goes on.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the writer thread over `out` (stdout in the gateway, a test's sink in tests).
pub(crate) fn batch_writer<W: Write + Send + 'static>(mut out: W) -> (BatchWriter, FlushOnDrop) {
    let shared = Arc::<Shared>::default();
    let thread = thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || write_batches(&shared, &mut out)
        })
        .expect("cannot start the log writer thread");
    (
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        FlushOnDrop {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_batches(shared: &Shared, out: &mut impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.lines.is_empty() && !pending.closing {
            pending = shared
                .first_line
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !pending.closing {
            drop(pending);
            thread::sleep(GATHER);
            pending = shared.lock();
        }
        mem::swap(&mut pending.lines, &mut batch);
        let dropped = mem::take(&mut pending.dropped);
        let closing = pending.closing;
        drop(pending);
        if dropped > 0 {
            // Nowhere better to say it: the output is the thing that failed.
            let _ = writeln!(
                out,
                "log-writer: {dropped} log lines dropped, the output could not keep up"
            );
        }
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        batch.shrink_to(KEEP);
        if closing {
            shared.lock().closed = true;
            shared.closed.notify_all();
            return;
        }
    }
}

impl Write for &BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.closing || pending.lines.len() + line.len() > LIMIT {
            pending.dropped += 1;
            return Ok(line.len());
        }
        let first = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        drop(pending);
        if first {
            self.shared.first_line.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = &'a BatchWriter;

    fn make_writer(&'a self) -> &'a BatchWriter {
        self
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.first_line.notify_one();
        let (pending, _) = self
            .shared
            .closed
            .wait_timeout_while(self.shared.lock(), CLOSE_WAIT, |p| !p.closed)
            .unwrap_or_else(PoisonError::into_inner);
        let (closed, dropped) = (pending.closed, pending.dropped);
        drop(pending);
        if closed {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        // Nothing is said of a stuck output: stderr may be the same stuck pipe.
        if closed && dropped > 0 {
            eprintln!("log-writer: {dropped} log lines dropped at exit");
        }
    }
}
