//! How a log line is laid out: as `tracing-subscriber`'s default (`Full`) format, written
//! straight into the line instead of through `fmt` machinery.
//!
//! The default format cost about 18 000 instructions for the request line (callgrind,
//! `benches/gateway.rs`): every field name and `=` goes through an `nu_ansi_term` style even
//! with colours off, every string through `str`'s `Debug`, and the timestamp is worked out
//! from scratch per event. Here the date and time are worked out once a second per thread,
//! names and plain strings are copied, and only a string that `Debug` would escape takes
//! `Debug`. The line reads the same:
//!
//! ```text
//! 2026-11-22T14:03:01.029568Z  INFO request request_id="b04e…" method=POST status=200 …
//! ```

use std::cell::Cell;
use std::fmt::{self, Debug, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The gateway's log: [`LineFormat`] through the batching writer (`log_writer.rs`) into `out`,
/// with colours when `ansi`, at `info` and above. Lines are written until the guard drops.
pub(crate) fn subscriber<W: std::io::Write + Send + 'static>(
    out: W,
    ansi: bool,
) -> (
    impl Subscriber + Send + Sync + 'static,
    super::log_writer::FlushOnDrop,
) {
    let (writer, flush) = super::log_writer::batch_writer(out);
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .event_format(LineFormat)
        .with_writer(writer)
        .finish();
    (subscriber, flush)
}

/// The event format of the gateway's log: the default one's layout, with colours on a
/// terminal as it has them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LineFormat;

const DIM: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        thread_local! {
            /// This thread's line, kept between events: no allocation per line.
            static LINE: Cell<String> = const { Cell::new(String::new()) };
        }
        // The line is put together here and handed over in one write: each of its forty-odd
        // pieces would otherwise be a call through `Writer`'s `dyn Write`.
        let mut line = LINE.take();
        line.clear();
        line.reserve(LINE_CAPACITY);
        if ansi {
            line.push_str(DIM);
        }
        timestamp(&mut line, SystemTime::now())?;
        if ansi {
            line.push_str(RESET);
        }
        line.push(' ');
        level(&mut line, *event.metadata().level(), ansi);
        line.push(' ');
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                seen = true;
                styled(&mut line, ansi, BOLD, span.metadata().name());
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        styled(&mut line, ansi, BOLD, "{");
                        line.push_str(fields);
                        styled(&mut line, ansi, BOLD, "}");
                    }
                }
                styled(&mut line, ansi, DIM, ":");
            }
            if seen {
                line.push(' ');
            }
        }
        let mut fields = Fields {
            out: &mut line,
            ansi,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push('\n');
        let written = writer.write_str(&line);
        LINE.set(line);
        written
    }
}

/// Room for the request line with its usual fields, so that it is not grown while written (the
/// first time on each thread).
const LINE_CAPACITY: usize = 384;

fn styled(out: &mut String, ansi: bool, style: &str, text: &str) {
    if ansi {
        out.push_str(style);
        out.push_str(text);
        out.push_str(RESET);
    } else {
        out.push_str(text);
    }
}

/// The level, right-aligned in five columns, coloured as the default format colours it.
fn level(out: &mut String, level: Level, ansi: bool) {
    let (name, colour) = match level {
        Level::TRACE => ("TRACE", "\x1b[35m"),
        Level::DEBUG => ("DEBUG", "\x1b[34m"),
        Level::INFO => (" INFO", "\x1b[32m"),
        Level::WARN => (" WARN", "\x1b[33m"),
        Level::ERROR => ("ERROR", "\x1b[31m"),
    };
    styled(out, ansi, colour, name)
}

/// RFC 3339 in UTC with microseconds, as `tracing-subscriber`'s `SystemTime` writes it.
pub(crate) fn timestamp(out: &mut impl Write, now: SystemTime) -> fmt::Result {
    thread_local! {
        /// The last second formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since_epoch.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != second {
        text = date_time(second);
        SECOND.set((second, text));
    }
    out.write_str(std::str::from_utf8(&text).unwrap_or("1970-01-01T00:00:00"))?;
    let mut micros = since_epoch.subsec_micros();
    let mut fraction = *b".000000Z";
    for digit in fraction[1..7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&fraction).unwrap_or(".000000Z"))
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second, by Howard Hinnant's `civil_from_days`.
fn date_time(second: u64) -> [u8; 19] {
    let days = second / 86_400;
    let of_day = second % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    text
}

/// A number's digits, without `fmt`'s padding and flags machinery.
fn decimal(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// The event's fields: the message as it is, then `name=value` each, strings quoted as `Debug`
/// quotes them (so that a client's text cannot break a line in two).
struct Fields<'a> {
    out: &'a mut String,
    ansi: bool,
    first: bool,
    /// A value's `Debug` or `Display` may fail, and the line with it.
    result: fmt::Result,
}

impl Fields<'_> {
    fn name(&mut self, field: &Field) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        let name = field.name();
        if name == "message" {
            return;
        }
        styled(
            self.out,
            self.ansi,
            ITALIC,
            name.strip_prefix("r#").unwrap_or(name),
        );
        styled(self.out, self.ansi, DIM, "=");
    }

    fn record(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.name(field);
            self.result = value(self.out);
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.record(field, |out| {
            if message {
                message_text(out, value);
            } else if value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
            {
                out.push('"');
                out.push_str(value);
                out.push('"');
            } else {
                write!(out, "{value:?}")?;
            }
            Ok(())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |out| {
            decimal(out, value);
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |out| {
            if value < 0 {
                out.push('-');
            }
            decimal(out, value.unsigned_abs());
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |out| {
            out.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.record(field, |out| write!(Sanitised(out), "{value:?}"));
        } else {
            self.record(field, |out| write!(out, "{value:?}"));
        }
    }

    /// The error, then the chain of its sources, as the default format writes them.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let ansi = self.ansi;
        self.record(field, |out| {
            write!(Sanitised(&mut *out), "{value}")?;
            let Some(mut error) = value.source() else {
                return Ok(());
            };
            out.push(' ');
            styled(out, ansi, ITALIC, field.name());
            styled(out, ansi, ITALIC, ".sources");
            styled(out, ansi, DIM, "=");
            out.push('[');
            loop {
                write!(Sanitised(&mut *out), "{error}")?;
                match error.source() {
                    Some(next) => error = next,
                    None => break,
                }
                out.push_str(", ");
            }
            out.push(']');
            Ok(())
        });
    }
}

/// A message as it is, but for the characters a terminal would act on (escape, bell, backspace,
/// form feed, delete and the C1 controls), written as escapes: as `tracing-subscriber` has done
/// since 0.3.20, so that a message cannot drive the terminal that shows the log.
fn message_text(out: &mut String, message: &str) {
    // C1 controls are U+0080–U+009F, encoded from a 0xC2 lead byte.
    if message
        .bytes()
        .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
    {
        // Writing into a `String` does not fail.
        let _ = Sanitised(out).write_str(message);
    } else {
        out.push_str(message);
    }
}

/// Writes through to `0`, the terminal's control characters escaped (see
/// [`message_text`]).
struct Sanitised<'a>(&'a mut String);

impl Write for Sanitised<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // The text between two escaped characters goes out in one write.
        let mut plain = 0;
        for (at, c) in text.char_indices() {
            let escape = match c {
                '\x1b' => Some("\\x1b"),
                '\x07' => Some("\\x07"),
                '\x08' => Some("\\x08"),
                '\x0c' => Some("\\x0c"),
                '\x7f' => Some("\\x7f"),
                // A C1 control: written as `Debug` writes it.
                '\u{80}'..='\u{9f}' => None,
                _ => continue,
            };
            self.0.push_str(&text[plain..at]);
            plain = at + c.len_utf8();
            match escape {
                Some(escape) => self.0.push_str(escape),
                None => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        self.0.push_str(&text[plain..]);
        Ok(())
    }
}
