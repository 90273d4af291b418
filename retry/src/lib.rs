//! keel's one retry policy, for everything that talks to a network: the remote cache tiers
//! (`keel_remote`) and source mirrors (`keel_sources`).
//!
//! An operation is tried once and retried up to [`Retry::retries`] times while its failure
//! says it is worth it ([`Attempt::Retry`]), waiting [`Retry::backoff`] before the first
//! retry and twice as long before each further one, never more than [`Retry::max_wait`].
//! What a failure means (transient, final, a sign the remote is unwell) is the caller's: this
//! crate only decides when to try again.
//!
//! What it does not do: time an attempt out (each caller bounds its own requests), jitter
//! (keel's retries come from one process, not from a fleet), or keep state between
//! operations (the remote tiers' circuit breaker is theirs).

use std::time::Duration;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The wait before the first retry; doubled before each further one.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_wait: Duration,
}

/// Why an attempt did not succeed, as its caller classifies the error.
#[derive(Debug)]
pub enum Attempt<E> {
    /// Worth another attempt (a timeout, a reset connection, a 503).
    Retry(E),
    /// Final: retrying cannot help (a 404, a digest mismatch, local I/O).
    Stop(E),
}

/// An operation that did not succeed: its last error, and how many attempts were made.
#[derive(Debug)]
pub struct Failed<E> {
    pub error: Attempt<E>,
    pub attempts: u32,
}

impl Retry {
    /// The longest a caller waits between attempts unless it says otherwise.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

    /// `retries` retries, the first after `backoff`, waits capped at
    /// [`Retry::DEFAULT_MAX_WAIT`].
    pub fn new(retries: u32, backoff: Duration) -> Retry {
        Retry {
            retries,
            backoff,
            max_wait: Self::DEFAULT_MAX_WAIT,
        }
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn wait_before(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_wait)
    }

    /// Runs `op` until it succeeds, fails for good, or the retries are spent; `before_retry`
    /// hears of each retry (the error that caused it and the wait) before the wait.
    pub fn run<T, E>(
        &self,
        mut op: impl FnMut() -> Result<T, Attempt<E>>,
        mut before_retry: impl FnMut(&E, Duration),
    ) -> Result<T, Failed<E>> {
        self.run_with(&mut op, &mut before_retry, std::thread::sleep)
    }

    fn run_with<T, E>(
        &self,
        op: &mut dyn FnMut() -> Result<T, Attempt<E>>,
        before_retry: &mut dyn FnMut(&E, Duration),
        mut sleep: impl FnMut(Duration),
    ) -> Result<T, Failed<E>> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match op() {
                Ok(v) => return Ok(v),
                Err(Attempt::Retry(e)) if attempts <= self.retries => {
                    let wait = self.wait_before(attempts);
                    before_retry(&e, wait);
                    sleep(wait);
                }
                Err(error) => return Err(Failed { error, attempts }),
            }
        }
    }
}

impl<E> Attempt<E> {
    /// The error, whatever the verdict.
    pub fn into_inner(self) -> E {
        match self {
            Attempt::Retry(e) | Attempt::Stop(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_from_the_backoff_up_to_the_cap() {
        let r = Retry {
            retries: 10,
            backoff: ms(200),
            max_wait: ms(1000),
        };
        let waits: Vec<u64> = (1..=5)
            .map(|n| r.wait_before(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [200, 400, 800, 1000, 1000]);
        assert_eq!(r.wait_before(u32::MAX), ms(1000), "no overflow");
    }

    #[test]
    fn transient_failures_are_retried_and_the_waits_are_told() {
        let r = Retry::new(3, ms(10));
        let mut calls = 0;
        let mut told = Vec::new();
        let mut slept = Vec::new();
        let out: Result<u32, _> = r.run_with(
            &mut || {
                calls += 1;
                if calls < 3 {
                    Err(Attempt::Retry(format!("flaky {calls}")))
                } else {
                    Ok(calls)
                }
            },
            &mut |e: &String, w| told.push((e.clone(), w)),
            |w| slept.push(w),
        );
        assert_eq!(out.unwrap(), 3);
        assert_eq!(
            told,
            [
                ("flaky 1".to_owned(), ms(10)),
                ("flaky 2".to_owned(), ms(20))
            ]
        );
        assert_eq!(slept, [ms(10), ms(20)]);
    }

    #[test]
    fn a_final_failure_is_not_retried_and_spent_retries_say_how_many_tries() {
        let r = Retry::new(2, ms(1));
        let mut calls = 0;
        let stop: Result<(), Failed<&str>> = r.run_with(
            &mut || {
                calls += 1;
                Err(Attempt::Stop("gone"))
            },
            &mut |_, _| {},
            |_| {},
        );
        let f = stop.unwrap_err();
        assert!(matches!(f.error, Attempt::Stop("gone")));
        assert_eq!((f.attempts, calls), (1, 1));

        let spent: Result<(), Failed<&str>> =
            r.run_with(&mut || Err(Attempt::Retry("busy")), &mut |_, _| {}, |_| {});
        let f = spent.unwrap_err();
        assert!(matches!(f.error, Attempt::Retry("busy")));
        assert_eq!(f.attempts, 3);
    }
}
