//! Where the request log's lines go: a buffer per thread that a thread of its own writes out
//! in batches.
//!
//! `tracing-appender`'s non-blocking writer hands every line to its thread through a channel,
//! and that thread wakes, spins (`sched_yield`) and parks again for nearly every line: under
//! load that was about 25 000 `sched_yield` and 13 000 `futex` calls a second, and the writer
//! preempting the tokio workers. Here a request's line is appended to its thread's own buffer,
//! under a lock no other request takes; only a line that finds the writer asleep wakes it,
//! which then waits a moment for more before writing every thread's lines with one `write`.
//! So a burst of lines costs one wake-up, an idle gateway costs none, and two cores logging at
//! once take no lock and fill no buffer in common, only reading the writer's sleep flag: one
//! buffer for all cost two threads logging about 0.2–0.4 µs a request more
//! (`benches/gateway.rs contend log-shared`).
//!
//! Each thread's lines keep their order; a batch holds one thread's lines, then another's, so
//! lines of different threads can come out of time order: by up to [`GATHER`], or by as long
//! as the output was stuck. Their timestamps tell.
//!
//! A slow terminal or pipe never holds a request: while the writer is stuck, each thread's
//! lines gather up to [`LIMIT`] bytes, and past that they are dropped and counted, and the
//! count is written when the output moves again. A line that comes once the last batch is
//! taken at exit is counted too.

use std::cell::RefCell;
use std::io::{self, Write};
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer waits, after a batch's first line, for the lines that follow it: long
/// enough to gather hundreds of lines under load, short enough that a line shows at once to
/// someone watching.
const GATHER: Duration = Duration::from_millis(10);

/// The most of one thread's lines that waits to be written while a batch is being written;
/// beyond it that thread's lines are dropped, and counted. Request lines come from the
/// runtime's workers, one a core; other threads log rarely.
pub(crate) const LIMIT: usize = 8 << 20;

/// How long the exit waits for the last lines to be written: an output that is stuck (a pipe
/// nobody reads) must not keep the process from exiting.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a buffer keeps of its capacity once written: a burst while the output was stuck must
/// not hold its megabytes for ever.
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
    /// This writer's number, telling its buffers from other writers' in a thread's list.
    number: u64,
    threads: Mutex<Threads>,
    /// The writer waits for a first line: the line that finds it so wakes it. Read by every
    /// line, written by the writer as it goes to sleep and wakes.
    asleep: AtomicBool,
    state: Mutex<State>,
    first_line: Condvar,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct Threads {
    /// Every thread's buffer, from its first line here.
    list: Vec<Arc<ThreadLines>>,
    /// The last batch is taken: a thread's first line from now on is dropped, and counted.
    stopped: bool,
}

#[derive(Debug, Default)]
struct State {
    closing: bool,
    /// The writer thread has written its last batch.
    closed: bool,
    /// Lines that came after the last batch was taken.
    dropped: u64,
}

/// One thread's lines waiting to be written, behind a lock that only that thread and the
/// writer, as it looks for lines, take.
#[derive(Debug, Default)]
struct ThreadLines {
    lines: Mutex<Lines>,
    /// The thread has ended: once its lines are written, the buffer goes.
    ended: AtomicBool,
}

#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    dropped: u64,
    /// The writer has taken its last batch: lines are dropped, and counted, and the thread
    /// forgets the buffer.
    stopped: bool,
}

impl Lines {
    fn waiting(&self) -> bool {
        !self.bytes.is_empty() || self.dropped > 0
    }
}

/// The writers made so far, for each writer's number.
static WRITERS: AtomicU64 = AtomicU64::new(0);

/// This thread's buffers, one for each writer it has written to.
struct Mine(Vec<(u64, Arc<ThreadLines>)>);

impl Drop for Mine {
    fn drop(&mut self) {
        for (_, lines) in &self.0 {
            // Release: the writer that sees it sees every line before it.
            lines.ended.store(true, Ordering::Release);
        }
    }
}

thread_local! {
    static MINE: RefCell<Mine> = const { RefCell::new(Mine(Vec::new())) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves at worst a partial line; the log goes on.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ThreadLines {
    /// `false` when the writer has stopped.
    fn append(&self, line: &[u8]) -> bool {
        let mut lines = lock(&self.lines);
        if lines.stopped {
            return false;
        }
        if lines.bytes.len() + line.len() > LIMIT {
            lines.dropped += 1;
        } else {
            lines.bytes.extend_from_slice(line);
        }
        true
    }
}

impl Shared {
    /// Waits until some thread has a line waiting, or the exit has begun (`true`).
    fn wait_for_a_line(&self) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.closing {
                return true;
            }
            self.asleep.store(true, Ordering::SeqCst);
            // Looked at after saying so, under each thread's lock: a line appended before this
            // look is seen here, and one appended after it sees the writer asleep. (The
            // buffers of ended threads go in `collect`.)
            let waiting = lock(&self.threads)
                .list
                .iter()
                .any(|thread| lock(&thread.lines).waiting());
            if waiting {
                self.asleep.store(false, Ordering::SeqCst);
                return false;
            }
            state = self
                .first_line
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Every thread's waiting lines into `batch`, and how many were dropped; the buffers of
    /// threads that have ended go. The `last` batch leaves every buffer stopped. Each thread's
    /// lines are swapped for `spare` under its lock and copied after it, so that a thread
    /// logging meanwhile never waits for a copy.
    fn collect(&self, batch: &mut Vec<u8>, spare: &mut Vec<u8>, last: bool) -> u64 {
        let mut dropped = 0;
        let mut threads = lock(&self.threads);
        threads.stopped = last;
        threads.list.retain(|thread| {
            // Read before the lines: an ended thread writes nothing after it.
            let ended = thread.ended.load(Ordering::Acquire);
            let mut lines = lock(&thread.lines);
            mem::swap(&mut lines.bytes, spare);
            dropped += mem::take(&mut lines.dropped);
            lines.stopped = last;
            drop(lines);
            batch.extend_from_slice(spare);
            spare.clear();
            spare.shrink_to(KEEP);
            !ended && !last
        });
        dropped
    }
}

/// Starts the writer thread over `out` (stdout in the gateway, a test's sink in tests).
pub(crate) fn batch_writer<W: Write + Send + 'static>(mut out: W) -> (BatchWriter, FlushOnDrop) {
    let shared = Arc::new(Shared {
        number: WRITERS.fetch_add(1, Ordering::Relaxed),
        ..Shared::default()
    });
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
    let (mut batch, mut spare) = (Vec::new(), Vec::new());
    loop {
        let mut closing = shared.wait_for_a_line();
        if !closing {
            thread::sleep(GATHER);
            closing = lock(&shared.state).closing;
        }
        let dropped = shared.collect(&mut batch, &mut spare, closing);
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
            lock(&shared.state).closed = true;
            shared.closed.notify_all();
            return;
        }
    }
}

impl BatchWriter {
    /// How many threads' buffers the writer holds (for tests: threads that end let theirs go).
    #[cfg(test)]
    pub(crate) fn threads(&self) -> usize {
        lock(&self.shared.threads).list.len()
    }

    /// How many lines came after the last batch was taken (for tests).
    #[cfg(test)]
    pub(crate) fn dropped_at_exit(&self) -> u64 {
        lock(&self.shared.state).dropped
    }

    /// Appends to this thread's own buffer, made and registered on its first line; `false`
    /// when the writer has stopped.
    fn append_here(&self, mine: &mut Mine, line: &[u8]) -> bool {
        let shared = &self.shared;
        if let Some(at) = mine.0.iter().position(|(n, _)| *n == shared.number) {
            if mine.0[at].1.append(line) {
                return true;
            }
            mine.0.swap_remove(at);
            return false;
        }
        self.register(line, |lines| mine.0.push((shared.number, lines)))
    }

    /// A new buffer holding `line`, handed to `keep` once the writer holds it too; `false`
    /// when the writer has stopped.
    fn register(&self, line: &[u8], keep: impl FnOnce(Arc<ThreadLines>)) -> bool {
        let lines = Arc::<ThreadLines>::default();
        lines.append(line);
        let mut threads = lock(&self.shared.threads);
        if threads.stopped {
            return false;
        }
        threads.list.push(Arc::clone(&lines));
        drop(threads);
        keep(lines);
        true
    }
}

impl Write for &BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &*self.shared;
        let kept = MINE
            .try_with(|mine| self.append_here(&mut mine.borrow_mut(), line))
            // The thread is ending and its list is gone: a buffer the writer lets go at once.
            .unwrap_or_else(|_| {
                self.register(line, |lines| lines.ended.store(true, Ordering::Release))
            });
        if !kept {
            lock(&shared.state).dropped += 1;
            return Ok(line.len());
        }
        // After the line, as the writer looks for lines after saying it sleeps: one of the two
        // sees the other's.
        if shared.asleep.load(Ordering::SeqCst) && shared.asleep.swap(false, Ordering::SeqCst) {
            let _state = lock(&shared.state);
            shared.first_line.notify_one();
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
        lock(&self.shared.state).closing = true;
        self.shared.first_line.notify_one();
        let (state, _) = self
            .shared
            .closed
            .wait_timeout_while(lock(&self.shared.state), CLOSE_WAIT, |s| !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        let (closed, dropped) = (state.closed, state.dropped);
        drop(state);
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
