//! Failed authentications, shared by every way in (the API's bearer tokens and client
//! certificates, the web UI's sign-in form): one limit per client address, so a token cannot be
//! guessed faster through one door than through another, and one audit row per address and
//! minute instead of one per attempt, so a flood of bad tokens cannot fill the append-only
//! trail.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ck_domain::TokenBuckets;
use time::OffsetDateTime;

use crate::AuditEvent;

/// Addresses tracked at most, by the limiter and by the audit aggregation. Beyond it, further
/// addresses are counted together under `::` (the audit row says so).
const TRACKED_ADDRESSES: usize = 100_000;

/// A minute of failures from one address, after its first (which is written at once).
#[derive(Debug, Default)]
struct MinuteTally {
    further: u64,
    last_detail: String,
}

/// The limiter and the audit aggregation.
#[derive(Debug)]
pub(crate) struct AuthFailures {
    limiter: Option<Mutex<TokenBuckets<IpAddr>>>,
    origin: Instant,
    /// (address, Unix minute) → failures after the first of that minute.
    tallies: Mutex<HashMap<(IpAddr, i64), MinuteTally>>,
}

/// What to do with one failure's audit record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FailureRecord {
    /// The first failure of this address in this minute: write it now.
    WriteNow,
    /// Counted; written with the minute's tally when the minute is over.
    Counted,
}

impl AuthFailures {
    /// `limit`: failures per second and burst per address (`None`: unlimited).
    pub(crate) fn new(limit: Option<(f64, u32)>) -> Self {
        Self {
            limiter: limit
                .map(|(per_second, burst)| Mutex::new(TokenBuckets::new(burst, per_second, TRACKED_ADDRESSES))),
            origin: Instant::now(),
            tallies: Mutex::new(HashMap::new()),
        }
    }

    fn seconds(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// `Err(wait)` when `peer` has used up its failed attempts.
    pub(crate) fn check(&self, peer: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.lock() {
            Ok(limiter) => limiter.retry_after(&peer, self.seconds()).map_or(Ok(()), Err),
            // A poisoned lock must not open the door: refuse for a moment.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// Counts one failure of `peer` at `now`; says whether its audit record is written now.
    pub(crate) fn failed(&self, peer: IpAddr, now: OffsetDateTime, detail: &str) -> FailureRecord {
        if let Some(limiter) = &self.limiter
            && let Ok(mut limiter) = limiter.lock()
        {
            limiter.spend(&peer, self.seconds());
        }
        let minute = now.unix_timestamp().div_euclid(60);
        let Ok(mut tallies) = self.tallies.lock() else {
            return FailureRecord::WriteNow;
        };
        let key = if tallies.len() >= TRACKED_ADDRESSES && !tallies.contains_key(&(peer, minute)) {
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), minute)
        } else {
            (peer, minute)
        };
        match tallies.get_mut(&key) {
            Some(tally) => {
                tally.further += 1;
                detail.clone_into(&mut tally.last_detail);
                FailureRecord::Counted
            }
            None => {
                tallies.insert(key, MinuteTally::default());
                FailureRecord::WriteNow
            }
        }
    }

    /// The audit rows of the minutes that are over at `now`: one per address and minute that
    /// saw more than one failure, with the count.
    pub(crate) fn closed_minutes(&self, now: OffsetDateTime) -> Vec<AuditEvent> {
        let current = now.unix_timestamp().div_euclid(60);
        let Ok(mut tallies) = self.tallies.lock() else {
            return Vec::new();
        };
        let closed: Vec<(IpAddr, i64)> = tallies.keys().filter(|(_, m)| *m < current).copied().collect();
        closed
            .into_iter()
            .filter_map(|key| tallies.remove(&key).map(|tally| (key, tally)))
            .filter(|(_, tally)| tally.further > 0)
            .map(|((peer, minute), tally)| {
                let mut event = AuditEvent::new("auth.failure", "anonymous", "denied");
                event.client = Some(peer.to_string());
                event.status = Some(401);
                let start = OffsetDateTime::from_unix_timestamp(minute * 60).unwrap_or(OffsetDateTime::UNIX_EPOCH);
                event.detail = Some(format!(
                    "{} further failed authentications in the minute from {start} (last: {})",
                    tally.further, tally.last_detail
                ));
                event
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_now_then_one_per_address_and_minute() {
        let failures = AuthFailures::new(Some((0.1, 3)));
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(failures.failed(peer, t0, "a"), FailureRecord::WriteNow);
        for _ in 0..50 {
            assert_eq!(failures.failed(peer, t0, "b"), FailureRecord::Counted);
        }
        assert_eq!(failures.failed(other, t0, "c"), FailureRecord::WriteNow);
        assert!(failures.check(peer).is_err(), "throttled after the burst");
        assert!(failures.check(other).is_ok());
        assert!(failures.closed_minutes(t0).is_empty(), "the minute is not over");
        let rows = failures.closed_minutes(t0 + time::Duration::minutes(1));
        assert_eq!(rows.len(), 1, "the other address failed once: already written");
        let detail = rows[0].detail.as_deref().unwrap();
        assert!(detail.starts_with("50 further failed authentications"), "{detail}");
        assert_eq!(rows[0].client.as_deref(), Some("192.0.2.7"));
        assert!(failures.closed_minutes(t0 + time::Duration::minutes(2)).is_empty());
    }
}
