//! The connection a [`RedisStore`](super::RedisStore) speaks through, replaced when the server
//! behind it stops being a primary, and the failures it meets told to the operator.
//!
//! redis-rs's `ConnectionManager` reconnects when a connection breaks, not when the server
//! answers with an error. After a failover the old primary usually keeps its clients and
//! answers every write `READONLY` (it now follows the new one), so a store that kept its
//! connection would fail every decision until restarted, though a new connection to the same
//! address (a DNS name the failover moved, a proxy) would reach the new primary.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult};

/// The least time between two replacements: a failover still in progress (the address still
/// leads to a replica) must not turn every decision into a new connection.
const REPLACE_EVERY: Duration = Duration::from_millis(100);

/// How often at most a failure is written to the log, per store: an outage fails every
/// request, and one line a second says as much.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The errors that mean the server is not a primary any more, or not yet: no write will work
/// on this connection, while a new one to the same address may reach the primary.
const NOT_A_PRIMARY: [&str; 2] = ["READONLY", "MASTERDOWN"];

/// The connection in use, replaceable, and the log of what went wrong with it.
pub(super) struct Link {
    client: Client,
    config: ConnectionManagerConfig,
    current: Mutex<Current>,
    reports: Mutex<Reports>,
}

struct Current {
    manager: ConnectionManager,
    /// Which connection this is: a failure met on one already replaced replaces nothing.
    number: u64,
    /// When it replaced another; `None` for the first.
    since: Option<Instant>,
}

/// The log lines held back since the last one written.
#[derive(Default)]
struct Reports {
    last: Option<Instant>,
    unlogged: u64,
}

/// Server errors that fail every call, whatever its key: the server is no primary, is
/// loading, busy with a script, out of memory, refusing writes it cannot persist, or refusing
/// the store's user or its password.
const OUTAGE: [&str; 9] = [
    "READONLY",
    "MASTERDOWN",
    "LOADING",
    "BUSY",
    "OOM",
    "MISCONF",
    "NOPERM",
    "NOAUTH",
    "WRONGPASS",
];

/// Whether `error` says Redis cannot serve the store now (no connection, no answer, or one of
/// the errors above), rather than something of one call's (a script's error on a value that
/// is not the store's).
pub(super) fn is_outage(error: &RedisError) -> bool {
    code_of(error).is_none_or(|code| OUTAGE.contains(&code))
}

/// A server error's code as the server meant it. Redis before 7 wraps an error raised inside a
/// script in its own: `ERR Error running script (call to f_…): @user_script:1: -READONLY You
/// can't write against a read only replica.`; the code is then the one after `: -`.
fn code_of(error: &RedisError) -> Option<&str> {
    let code = error.code()?;
    if code != "ERR" {
        return Some(code);
    }
    let inner = error.detail().and_then(|detail| {
        let rest = &detail[detail.find(": -")? + 3..];
        let end = rest
            .find(|c: char| !c.is_ascii_uppercase())
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    });
    Some(inner.unwrap_or(code))
}

/// What a failed call says of Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// Redis cannot serve the store now (see [`is_outage`]).
    Outage,
    /// The server was no primary, and the call's connection has been replaced: the next call
    /// goes to a new one, and may well work.
    Replaced,
    /// Redis answered, with this call's own error: it is there.
    Call,
}

/// A connection handed out, and which one it was, to report a failure against.
pub(super) struct Handed {
    pub(super) manager: ConnectionManager,
    number: u64,
}

impl Link {
    /// A link opening its connection on first use. Must run inside the Tokio runtime the
    /// connection is to run on.
    pub(super) fn new(client: Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            client,
            config,
            current: Mutex::new(Current {
                manager,
                number: 0,
                since: None,
            }),
            reports: Mutex::default(),
        })
    }

    /// The connection to make a call on (a clone, as cheap as an `Arc`'s).
    pub(super) fn get(&self) -> Handed {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Handed {
            manager: current.manager.clone(),
            number: current.number,
        }
    }

    /// A call on `handed` failed with `error`: written to the log (at most once a second),
    /// and when the server is no longer a primary the connection is replaced, so that the next
    /// call connects anew. Runs inside the Tokio runtime the store's calls run on (the store's,
    /// or the caller's), where a new connection must start.
    pub(super) fn failed(&self, handed: &Handed, during: Call, error: &RedisError) -> Fault {
        let not_a_primary = code_of(error).is_some_and(|code| NOT_A_PRIMARY.contains(&code));
        let replaced = not_a_primary && self.replace(handed.number);
        self.report(format_args!(
            "{during} failed{}: {}{}",
            during.loss(false),
            AsSent(error),
            if replaced {
                "; the server is not a primary: connecting again"
            } else {
                ""
            }
        ));
        if replaced {
            Fault::Replaced
        } else if is_outage(error) {
            Fault::Outage
        } else {
            Fault::Call
        }
    }

    /// A call got no answer within `after`.
    pub(super) fn unanswered(&self, during: Call, after: Duration) {
        self.report(format_args!(
            "{during} got no answer within {after:?}{}",
            during.loss(true)
        ));
    }

    /// Replaces connection `number` by a new one, unless it was replaced already or the
    /// last replacement is too recent. Whether `number` is replaced now, by this call or an
    /// earlier one.
    fn replace(&self, number: u64) -> bool {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.number != number {
            return true;
        }
        // The connection that replaced another is no primary either: the address still
        // leads to a replica, a failover under way.
        if current
            .since
            .is_some_and(|since| since.elapsed() < REPLACE_EVERY)
        {
            return false;
        }
        // Only a configuration the first connection already passed could fail here.
        let Ok(manager) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        else {
            return false;
        };
        // The old connection closes once the calls still holding it have ended.
        *current = Current {
            manager,
            number: number + 1,
            since: Some(Instant::now()),
        };
        true
    }

    fn report(&self, what: fmt::Arguments<'_>) {
        let unlogged = {
            let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if reports
                .last
                .is_some_and(|last| now.duration_since(last) < REPORT_EVERY)
            {
                reports.unlogged += 1;
                return;
            }
            reports.last = Some(now);
            std::mem::take(&mut reports.unlogged)
        };
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "tower_maas", unlogged, "RedisStore: {what}");
        #[cfg(not(feature = "tracing"))]
        let _ = (what, unlogged);
    }
}

/// Which of the store's calls met a failure, for the log.
#[derive(Clone, Copy, Debug)]
pub(super) enum Call {
    /// A decision (the acquire script).
    Decision,
    /// A reconciliation (the settle script): what it carried is lost.
    Reconciliation,
}

impl Call {
    /// What the log adds of what the call carried: a reconciliation's correction and quota
    /// charge, which is lost, or `maybe` (an answer may yet have been applied). No allocation:
    /// during an outage every call fails, most of them unlogged.
    fn loss(self, maybe: bool) -> &'static str {
        match (self, maybe) {
            (Self::Decision, _) => "",
            (Self::Reconciliation, false) => " (what it carried is lost)",
            (Self::Reconciliation, true) => " (what it carried may be lost)",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Decision => "a decision",
            Self::Reconciliation => "a reconciliation",
        })
    }
}

/// A server's error as Redis sent it (`READONLY You can't write…`, as `redis-cli` shows it),
/// other errors as redis-rs words them.
struct AsSent<'a>(&'a RedisError);

impl fmt::Display for AsSent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.code(), self.0.detail()) {
            (Some(code), Some(detail)) => write!(f, "{code} {detail}"),
            (Some(code), None) => f.write_str(code),
            _ => fmt::Display::fmt(self.0, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(line: &str) -> RedisError {
        redis::parse_redis_value(format!("-{line}\r\n").as_bytes())
            .and_then(redis::Value::extract_error)
            .unwrap_err()
    }

    /// Redis 7 answers a write inside a script on a replica with its own code; Redis 5 and 6
    /// wrap it in `ERR Error running script`. Both are the server being no primary.
    #[test]
    fn a_code_inside_a_scripts_error_is_the_code() {
        for line in [
            "READONLY You can't write against a read only replica. script: 131b5f2e, on @user_script:1.",
            "ERR Error running script (call to f_131b5f2e): @user_script:1: -READONLY You can't write against a read only replica.",
        ] {
            assert_eq!(code_of(&server_error(line)), Some("READONLY"), "{line}");
            assert!(is_outage(&server_error(line)), "{line}");
        }
        let own = server_error(
            "ERR Error running script (call to f_131b5f2e): @user_script:9: user_script:9: attempt to compare nil with number",
        );
        assert_eq!(code_of(&own), Some("ERR"));
        assert!(!is_outage(&own));
        let wrapped_oom = server_error(
            "ERR Error running script (call to f_1): @user_script:3: -OOM command not allowed when used memory > 'maxmemory'.",
        );
        assert!(is_outage(&wrapped_oom));
    }
}
