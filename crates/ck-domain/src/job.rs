//! Jobs and their state machine.
//!
//! ```text
//! pending ──claim──▶ running ──succeed──▶ succeeded
//!    ▲                 │ │
//!    └──retry/expire───┘ └──fail (attempts exhausted or permanent)──▶ failed ──requeue──▶ pending
//! pending | running ──cancel──▶ cancelled
//! ```

use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime};

use crate::{CertificateId, JobId};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// The first issuance of a certificate.
    Issue,
    /// A renewal (scheduled or forced).
    Renew,
    /// An agent's deployment of a version to its targets, recorded when the agent reports it
    /// (never claimed by the server's workers).
    Deploy,
}

impl JobKind {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Renew => "renew",
            Self::Deploy => "deploy",
        }
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "issue" => Ok(Self::Issue),
            "renew" => Ok(Self::Renew),
            "deploy" => Ok(Self::Deploy),
            other => Err(format!("unknown job kind '{other}'")),
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for a worker (possibly until a retry time).
    Pending,
    /// Claimed by a worker holding a lease.
    Running,
    /// Done.
    Succeeded,
    /// Gave up: a permanent error or all attempts used.
    Failed,
    /// Withdrawn before it finished.
    Cancelled,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a job cannot go from {from} to {to}")]
pub struct TransitionError {
    /// The current state.
    pub from: JobState,
    /// The refused next state.
    pub to: JobState,
}

impl JobState {
    /// Every state.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished (it will not run again by itself).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// Checks a transition against the diagram in this module's documentation.
    pub fn transition(self, to: Self) -> Result<Self, TransitionError> {
        use JobState::*;
        let allowed = matches!(
            (self, to),
            (Pending, Running)
                | (Running, Succeeded)
                | (Running, Pending)
                | (Running, Failed)
                | (Failed, Pending)
                | (Pending, Cancelled)
                | (Running, Cancelled)
        );
        if allowed {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            format!("unknown job state '{s}' (expected pending, running, succeeded, failed or cancelled)")
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// The certificate it works on.
    pub certificate_id: CertificateId,
    /// Where it is.
    pub state: JobState,
    /// How many times a worker has claimed it.
    pub attempts: u32,
    /// After this many failed attempts it fails for good.
    pub max_attempts: u32,
    /// Not claimed before this moment (retry backoff).
    pub run_after: OffsetDateTime,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The CA's problem document (JSON) of the last failed attempt, when a CA sent one.
    pub problem: Option<String>,
    /// When it was enqueued.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When it reached a terminal state.
    pub finished_at: Option<OffsetDateTime>,
}

/// Exponential backoff with full jitter between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay ceiling before the first retry.
    pub base_delay: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay before the next attempt after `attempts_made` failed ones, or `None` when the
    /// job should fail for good.
    ///
    /// "Full jitter": a uniform pick in `(0, min(max, base·2^(n-1))]`, from `jitter_sample` in
    /// `[0, 1)`, so failing jobs of a fleet spread out instead of retrying in lockstep.
    pub fn next_delay(&self, attempts_made: u32, jitter_sample: f64) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let exponent = attempts_made.saturating_sub(1).min(30);
        let ceiling = (self.base_delay * 2_i32.saturating_pow(exponent)).min(self.max_delay);
        let fraction = 1.0 - jitter_sample.clamp(0.0, 1.0);
        Some((ceiling * fraction).max(Duration::milliseconds(10)))
    }
}

impl Default for RetryPolicy {
    /// Five attempts; waits of up to 5 s, 10 s, 20 s, 40 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::seconds(5),
            max_delay: Duration::minutes(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_diagram() {
        use JobState::*;
        let mut table = String::new();
        for from in JobState::ALL {
            let targets: Vec<&str> = JobState::ALL
                .into_iter()
                .filter(|to| from.transition(*to).is_ok())
                .map(JobState::as_str)
                .collect();
            table.push_str(&format!("{from} -> {}\n", targets.join(", ")));
        }
        assert_eq!(
            table,
            "pending -> running, cancelled\n\
             running -> pending, succeeded, failed, cancelled\n\
             succeeded -> \n\
             failed -> pending\n\
             cancelled -> \n"
        );
        assert_eq!(
            Succeeded.transition(Running),
            Err(TransitionError {
                from: Succeeded,
                to: Running
            })
        );
    }

    #[test]
    fn backoff_grows_caps_and_stops() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::seconds(2),
            max_delay: Duration::seconds(5),
        };
        assert_eq!(policy.next_delay(1, 0.0), Some(Duration::seconds(2)));
        assert_eq!(policy.next_delay(2, 0.0), Some(Duration::seconds(4)));
        assert_eq!(policy.next_delay(3, 0.0), Some(Duration::seconds(5)), "capped");
        assert_eq!(policy.next_delay(4, 0.0), None, "attempts exhausted");
        assert_eq!(policy.next_delay(2, 0.5), Some(Duration::seconds(2)), "jitter shortens");
    }
}
