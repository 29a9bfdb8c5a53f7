//! The open-file limit against the connections the gateway may serve at once.
//!
//! Each connection takes a file descriptor, and each request it has at an upstream another
//! (an HTTP/2 client may have 200 at once). Past the limit, `accept` fails (the server logs it
//! and waits) and connections queue in the kernel with nothing else to show: a soft limit of
//! 1024, the usual default, cannot serve the configuration's 10 000. So the gateway raises its
//! soft limit to the hard one, as Go's runtime does for every program, and says so when even
//! the hard limit is below what `max_connections` needs at least.

/// What the gateway holds whatever its load: the listener, the log, the runtimes' own, idle
/// upstream connections, Redis's.
const BESIDES: u64 = 64;

/// The descriptors `connections` served at once take at least, each with a request at an
/// upstream or not.
pub(crate) fn needed(connections: usize, proxied: bool) -> u64 {
    u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(if proxied { 2 } else { 1 })
        .saturating_add(BESIDES)
}

/// The soft limit before and after [`raise`], and the hard one; `None` is no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) was: Option<u64>,
    pub(crate) now: Option<u64>,
    pub(crate) hard: Option<u64>,
}

impl Limits {
    /// Whether `needed` descriptors fit under the soft limit now.
    pub(crate) fn fits(&self, needed: u64) -> bool {
        self.now.is_none_or(|now| now >= needed)
    }
}

/// Raises this process's soft limit on open files to the hard one. Without a hard limit (as
/// macOS has, which yet refuses a soft limit past its own maximum), to `needed` if it is above.
#[cfg(unix)]
pub(crate) fn raise(needed: u64) -> std::io::Result<Limits> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let unchanged = Limits {
        was: limit.current,
        now: limit.current,
        hard: limit.maximum,
    };
    let target = match limit.maximum {
        Some(hard) => hard,
        None if unchanged.fits(needed) => return Ok(unchanged),
        None => needed,
    };
    if limit.current.is_none_or(|soft| soft >= target) {
        return Ok(unchanged);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    )?;
    Ok(Limits {
        now: Some(target),
        ..unchanged
    })
}

/// Elsewhere there is no such limit to raise.
#[cfg(not(unix))]
pub(crate) fn raise(_needed: u64) -> std::io::Result<Limits> {
    Ok(Limits {
        was: None,
        now: None,
        hard: None,
    })
}
