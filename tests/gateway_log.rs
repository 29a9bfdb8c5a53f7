//! The example gateway's log: its line format against `tracing-subscriber`'s default format,
//! which it reproduces, and its batching writer.

mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/gateway/log_format.rs"]
mod log_format;
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/gateway/log_writer.rs"]
mod log_writer;

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Captured, is_timestamp};
use log_format::LineFormat;

/// An error with a chain of sources.
#[derive(Debug)]
struct Failure(&'static str, Option<Box<Failure>>);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

/// Every kind of field the gateway's events and the crate's carry, and strings that need
/// escaping, at every level, in and out of a span.
fn events() {
    let quoted = "say \"hi\"\\ then\nnew line\ttab \u{7f} 模型 🚀 é";
    tracing::info!(
        request_id = "0123abcd",
        method = %http::Method::POST,
        path = "/v1/chat/completions",
        key = "team-a",
        model = quoted,
        status = 200u16,
        code = "-",
        prompt_tokens = 9u64,
        tokens = %"12",
        latency_us = 1234u64,
        duration_us = 2345u64,
        "request"
    );
    tracing::warn!(delta = -42i64, ok = true, ratio = 0.5f64, list = ?[1, 2], "with {} args", 2);
    tracing::error!(r#type = "raw", empty = "");
    tracing::debug!("only a message");
    // What a terminal would act on is escaped in a message, and only there. (A newline is not:
    // the gateway's messages are constants, the client's text goes in quoted fields.)
    tracing::info!(
        text = "esc \x1b[31m bel \x07 c1 \u{9b}",
        "esc \x1b[2J bel \x07 bs \x08 ff \x0c del \x7f c1 \u{85} é"
    );
    tracing::warn!("formatted {} message", "\x1b[0m");
    let cause = Failure("disk \x1b gone", None);
    let error = Failure("cannot write", Some(Box::new(cause)));
    tracing::error!(
        error = &error as &(dyn std::error::Error + 'static),
        "failed"
    );
    tracing::error!(error = &Failure("alone", None) as &(dyn std::error::Error + 'static));
    tracing::trace!(message = "message as a field", after = 1u64);
    let span = tracing::info_span!("maas_request", request_id = %"ab12", n = 3u64);
    let _entered = span.enter();
    let inner = tracing::info_span!("inner");
    let _inner = inner.enter();
    tracing::info!(in_span = "yes", "inside");
}

/// The lines `events` gives under a format, timestamps cut off.
fn lines_under<F>(format: F, ansi: bool) -> Vec<String>
where
    F: tracing_subscriber::fmt::FormatEvent<
            tracing_subscriber::Registry,
            tracing_subscriber::fmt::format::DefaultFields,
        > + Send
        + Sync
        + 'static,
{
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(ansi)
        .event_format(format)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, events);
    let (dim, reset) = if ansi {
        ("\x1b[2m", "\x1b[0m")
    } else {
        ("", "")
    };
    captured
        .text()
        .split_inclusive('\n')
        .map(|line| {
            let rest = line.strip_prefix(dim).unwrap();
            let (stamp, rest) = rest.split_at(27);
            assert!(is_timestamp(stamp), "{stamp:?} in {line:?}");
            rest.strip_prefix(reset).unwrap().to_owned()
        })
        .collect()
}

#[test]
fn the_line_format_writes_what_the_default_format_writes() {
    for ansi in [false, true] {
        let default = tracing_subscriber::fmt::format().with_target(false);
        let expected = lines_under(default, ansi);
        assert_eq!(expected.len(), 10, "{expected:?}");
        assert_eq!(lines_under(LineFormat, ansi), expected, "ansi: {ansi}");
    }
    // And the request line reads as the gateway's log documents it.
    assert_eq!(
        lines_under(LineFormat, false)[0],
        "  INFO request request_id=\"0123abcd\" method=POST path=\"/v1/chat/completions\" \
         key=\"team-a\" model=\"say \\\"hi\\\"\\\\ then\\nnew line\\ttab \\u{7f} 模型 🚀 é\" \
         status=200 code=\"-\" prompt_tokens=9 tokens=12 latency_us=1234 duration_us=2345\n"
    );
}

#[test]
fn timestamps_in_utc_to_the_microsecond() {
    let at = |seconds: u64, micros: u32| {
        let mut text = String::new();
        let time = UNIX_EPOCH + Duration::new(seconds, micros * 1000);
        log_format::timestamp(&mut text, time).unwrap();
        text
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
    assert_eq!(at(1_795_356_088, 29_568), "2026-11-22T14:01:28.029568Z");
    // The same second again, from the thread's cache.
    assert_eq!(at(1_795_356_088, 999_999), "2026-11-22T14:01:28.999999Z");
    assert_eq!(at(4_107_542_399, 500_000), "2100-02-28T23:59:59.500000Z");
    assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
    // Before the epoch (a clock set wrong): the epoch, not a panic.
    let mut text = String::new();
    log_format::timestamp(&mut text, UNIX_EPOCH - Duration::from_secs(5)).unwrap();
    assert_eq!(text, "1970-01-01T00:00:00.000000Z");
    // And now, as `tracing-subscriber` writes it (unless a second turned in between).
    for _ in 0..3 {
        let mut ours = String::new();
        log_format::timestamp(&mut ours, SystemTime::now()).unwrap();
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::FormatTime::format_time(
            &tracing_subscriber::fmt::time::SystemTime,
            &mut tracing_subscriber::fmt::format::Writer::new(&mut theirs),
        )
        .unwrap();
        if ours[..19] == theirs[..19] {
            assert!(
                is_timestamp(&ours) && is_timestamp(&theirs),
                "{ours} {theirs}"
            );
            return;
        }
    }
    panic!("our timestamps and tracing-subscriber's disagree on the second");
}

/// Polls `done` until it holds, for up to ten seconds: a log line shows without waiting for
/// more lines or for the writer to close.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn lines_are_written_whole_in_order_and_without_waiting_for_more() {
    let captured = Captured::default();
    let (writer, flush) = log_writer::batch_writer(captured.clone());
    (&writer).write_all(b"first line\n").unwrap();
    eventually("a lone line is written", || {
        captured.text() == "first line\n"
    });
    // Four threads, 2 000 lines each: every line whole, each thread's lines in order.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let writer = writer.clone();
            scope.spawn(move || {
                for i in 0..2000 {
                    (&writer)
                        .write_all(format!("thread {t} line {i}\n").as_bytes())
                        .unwrap();
                }
            });
        }
    });
    drop(flush);
    let text = captured.text();
    let mut next = [0; 4];
    for line in text.lines().skip(1) {
        let (t, i) = line
            .strip_prefix("thread ")
            .and_then(|rest| rest.split_once(" line "))
            .unwrap_or_else(|| panic!("a broken line: {line:?}"));
        let t: usize = t.parse().unwrap();
        assert_eq!(i.parse::<usize>().unwrap(), next[t], "{line}");
        next[t] += 1;
    }
    assert_eq!(next, [2000; 4]);
}

/// Each thread that logs has a buffer of its own: a hundred threads that write a line each and
/// end have every line written and leave no buffer behind once the writer looks again.
#[test]
fn threads_that_end_leave_their_lines_written_and_no_buffer() {
    let captured = Captured::default();
    let (writer, flush) = log_writer::batch_writer(captured.clone());
    for t in 0..100 {
        let writer = writer.clone();
        std::thread::spawn(move || {
            (&writer)
                .write_all(format!("thread {t}\n").as_bytes())
                .unwrap();
        })
        .join()
        .unwrap();
    }
    // The writer looks at the buffers when a line comes: ended threads' go then.
    (&writer).write_all(b"last\n").unwrap();
    eventually(
        "every line written and every ended thread's buffer let go",
        || captured.text().lines().count() == 101 && writer.threads() == 1,
    );
    drop(flush);
    let mut lines: Vec<String> = captured.text().lines().map(str::to_owned).collect();
    lines.sort();
    let mut expected: Vec<String> = (0..100).map(|t| format!("thread {t}")).collect();
    expected.push("last".to_owned());
    expected.sort();
    assert_eq!(lines, expected);
}

/// An output that holds every write until the test opens it, and says when one is waiting.
struct Stuck {
    open: Arc<(Mutex<bool>, Condvar)>,
    waiting: mpsc::Sender<()>,
    out: Captured,
}

impl Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.waiting.send(());
        let (open, opened) = &*self.open;
        let mut open = open.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A batch writer into a [`Stuck`] output, with `first` written and held in its `write`: the
/// writer, its guard, what the output was given, one message per `write` after the first, and
/// the handle that opens the output.
fn held_writer(
    first: &[u8],
) -> (
    log_writer::BatchWriter,
    log_writer::FlushOnDrop,
    Captured,
    mpsc::Receiver<()>,
    Arc<(Mutex<bool>, Condvar)>,
) {
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let (waiting, writing) = mpsc::channel();
    let out = Captured::default();
    let (writer, flush) = log_writer::batch_writer(Stuck {
        open: Arc::clone(&open),
        waiting,
        out: out.clone(),
    });
    (&writer).write_all(first).unwrap();
    // The writer thread is now inside `write`, held.
    writing.recv_timeout(Duration::from_secs(10)).unwrap();
    (writer, flush, out, writing, open)
}

/// Lets a [`Stuck`] output's writes through.
fn release(open: &(Mutex<bool>, Condvar)) {
    let (open, opened) = open;
    *open.lock().unwrap() = true;
    opened.notify_all();
}

#[test]
fn a_stuck_output_holds_no_request_and_bounded_memory() {
    let (writer, flush, out, _writes, open) = held_writer(b"first\n");
    // Lines keep being taken at once: up to the limit kept, past it dropped and counted.
    let line = |c: u8| {
        let mut line = vec![c; 1 << 20];
        *line.last_mut().unwrap() = b'\n';
        line
    };
    let kept = log_writer::LIMIT >> 20;
    for c in (b'a'..).take(kept + 3) {
        (&writer).write_all(&line(c)).unwrap();
    }
    release(&open);
    drop(flush);
    let mut expected = b"first\n".to_vec();
    expected.extend_from_slice(b"log-writer: 3 log lines dropped, the output could not keep up\n");
    for c in (b'a'..).take(kept) {
        expected.extend_from_slice(&line(c));
    }
    assert!(out.bytes() == expected, "not the lines expected");
}

/// Lines that come while the output is busy go out together, not in a `write` each.
#[test]
fn lines_that_wait_go_out_in_one_write() {
    let (writer, flush, out, writes, open) = held_writer(b"first\n");
    let mut expected = b"first\n".to_vec();
    for i in 0..1000 {
        let line = format!("line {i}\n");
        (&writer).write_all(line.as_bytes()).unwrap();
        expected.extend_from_slice(line.as_bytes());
    }
    release(&open);
    drop(flush);
    assert!(out.bytes() == expected, "not the lines expected");
    // One `write` for the first line, then the thousand waiting lines together.
    let writes = 1 + writes.try_iter().count();
    assert!(writes <= 3, "{writes} writes for 1001 lines");
}

/// A line that comes once the last batch is taken is neither kept nor lost without a word: it
/// is counted, as a line dropped at exit.
#[test]
fn a_line_after_the_last_batch_is_counted() {
    let captured = Captured::default();
    let (writer, flush) = log_writer::batch_writer(captured.clone());
    (&writer).write_all(b"before\n").unwrap();
    drop(flush);
    (&writer).write_all(b"after\n").unwrap();
    std::thread::spawn({
        let writer = writer.clone();
        move || (&writer).write_all(b"after, from a new thread\n").unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(captured.text(), "before\n");
    assert_eq!(writer.dropped_at_exit(), 2);
}

#[test]
fn closing_while_the_output_is_stuck_does_not_hang() {
    let (_writer, flush, _out, _writes, open) = held_writer(b"last words\n");
    // The exit waits a moment for the output, then goes on without it.
    let (closed, done) = mpsc::channel();
    std::thread::spawn(move || {
        drop(flush);
        closed.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(10))
        .expect("closing the log waited for a stuck output");
    release(&open);
}
