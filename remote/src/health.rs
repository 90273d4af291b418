//! A remote tier's health, shared by the HTTP and gRPC tiers: each operation is retried
//! under [`keel_retry::Retry`] while its failure is transient, and after
//! `breaker_threshold` consecutive failed operations the tier is disabled for the rest of
//! the process (one warning; every later call fails at once with
//! [`RemoteError::Disabled`]). Uploads can be stopped on their own (a full server).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::error::{RemoteError, Result};
use crate::tier::{Stats, bump};

/// The "is this remote still worth talking to" state shared by the HTTP and gRPC tiers.
#[derive(Debug, Default)]
pub(crate) struct Health {
    consecutive_failures: AtomicU32,
    disabled: AtomicBool,
    uploads_stopped: AtomicBool,
}

impl Health {
    pub(crate) fn check(&self, url: &str) -> Result<()> {
        if self.disabled.load(Ordering::Relaxed) {
            Err(RemoteError::Disabled {
                url: url.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self, url: &str, threshold: u32, stats: &Stats, err: &RemoteError) {
        bump(&stats.errors, 1);
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= threshold && !self.disabled.swap(true, Ordering::Relaxed) {
            bump(&stats.warnings, 1);
            tracing::warn!(
                remote = url,
                "remote cache disabled for the rest of this build after {n} consecutive failures (last: {err}); building locally"
            );
        }
    }

    pub(crate) fn stop_uploads(&self, url: &str, why: &str, stats: &Stats) {
        if !self.uploads_stopped.swap(true, Ordering::Relaxed) {
            bump(&stats.warnings, 1);
            tracing::warn!(remote = url, "uploads to the remote cache stopped: {why}");
        }
    }

    pub(crate) fn uploads_stopped(&self) -> bool {
        self.uploads_stopped.load(Ordering::Relaxed)
    }

    pub(crate) fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }
}

/// How hard to try: the retry policy, and how many consecutive failed operations disable
/// the tier.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub retry: keel_retry::Retry,
    pub breaker_threshold: u32,
}

/// Runs `op` under `policy`'s retries; a final failure counts towards the breaker of
/// `health`.
pub(crate) fn run_op<T>(
    health: &Health,
    stats: &Stats,
    url: &str,
    policy: Policy,
    mut op: impl FnMut() -> Result<T, Fail>,
) -> Result<T> {
    use keel_retry::Attempt;
    health.check(url)?;
    let once = || {
        op().map_err(|f| match f {
            Fail::Retry(_) => Attempt::Retry(f),
            Fail::Fatal(_) | Fail::Other(_) => Attempt::Stop(f),
        })
    };
    let told = |f: &Fail, _wait| {
        if let Fail::Retry(e) = f {
            tracing::debug!(remote = url, "retrying after {e}");
        }
        bump(&stats.retries, 1);
    };
    match policy.retry.run(once, told) {
        Ok(v) => {
            health.success();
            Ok(v)
        }
        Err(failed) => match failed.error.into_inner() {
            Fail::Retry(e) | Fail::Fatal(e) => {
                health.failure(url, policy.breaker_threshold, stats, &e);
                Err(e)
            }
            Fail::Other(e) => {
                bump(&stats.errors, 1);
                Err(e)
            }
        },
    }
}

/// One attempt's outcome when it did not succeed.
pub(crate) enum Fail {
    /// Worth another attempt.
    Retry(RemoteError),
    /// Final, and a sign the remote is unwell (counts towards the breaker).
    Fatal(RemoteError),
    /// Final, but says nothing about the remote's health (a digest mismatch, local I/O).
    Other(RemoteError),
}
