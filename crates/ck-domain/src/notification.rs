//! What is worth telling people: the events the control plane notifies, the expiry thresholds
//! of a certificate version, and which notifier receives which event.

use std::fmt;
use std::str::FromStr;

use time::{Duration, OffsetDateTime};

use crate::Labels;

/// Something that happened and that a notifier may be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A certificate's first version was issued.
    Issued,
    /// A certificate got a new version.
    Renewed,
    /// An attempt at a certificate's first issuance failed (with the CA's or DNS error).
    IssuanceFailed,
    /// An attempt at a renewal failed (with the CA's or DNS error).
    RenewalFailed,
    /// A certificate was revoked.
    Revoked,
    /// An agent deployed a version to a target.
    Deployed,
    /// An agent failed to deploy a version to a target.
    DeploymentFailed,
    /// A certificate version came within one of its expiry thresholds (or expired).
    ThresholdCrossed,
    /// An issuer's health check failed after passing.
    IssuerUnhealthy,
    /// An agent stopped sending heartbeats.
    AgentOffline,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 10] = [
        Self::Issued,
        Self::Renewed,
        Self::IssuanceFailed,
        Self::RenewalFailed,
        Self::Revoked,
        Self::Deployed,
        Self::DeploymentFailed,
        Self::ThresholdCrossed,
        Self::IssuerUnhealthy,
        Self::AgentOffline,
    ];

    /// The name in configuration, the API and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issued => "issued",
            Self::Renewed => "renewed",
            Self::IssuanceFailed => "issuance_failed",
            Self::RenewalFailed => "renewal_failed",
            Self::Revoked => "revoked",
            Self::Deployed => "deployed",
            Self::DeploymentFailed => "deployment_failed",
            Self::ThresholdCrossed => "threshold_crossed",
            Self::IssuerUnhealthy => "issuer_unhealthy",
            Self::AgentOffline => "agent_offline",
        }
    }

    /// Whether the event reports something going wrong (failures, thresholds, health).
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Self::IssuanceFailed
                | Self::RenewalFailed
                | Self::DeploymentFailed
                | Self::ThresholdCrossed
                | Self::IssuerUnhealthy
                | Self::AgentOffline
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event name that is not one of [`EventKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown event {0:?}: use one of issued, renewed, issuance_failed, renewal_failed, revoked, deployed, deployment_failed, threshold_crossed, issuer_unhealthy, agent_offline"
)]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// Thresholds that make no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    /// More than ten years before expiry.
    #[error("expiry threshold of {0} days is too large: use at most 3650")]
    TooLarge(u32),
    /// More thresholds than anybody reads.
    #[error("{0} expiry thresholds are too many: use at most 16")]
    TooMany(usize),
}

/// Days before expiry at which a certificate version warns (default 30, 14, 7, 1, 0; 0 is the
/// expiry itself). Kept sorted from the farthest to the nearest, without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExpiryThresholds(Vec<u32>);

impl ExpiryThresholds {
    /// Thresholds from days in any order; repeats are dropped.
    pub fn new(mut days: Vec<u32>) -> Result<Self, ThresholdError> {
        if days.len() > 16 {
            return Err(ThresholdError::TooMany(days.len()));
        }
        if let Some(&too_large) = days.iter().find(|&&d| d > 3650) {
            return Err(ThresholdError::TooLarge(too_large));
        }
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();
        Ok(Self(days))
    }

    /// The days, farthest first.
    pub fn days(&self) -> &[u32] {
        &self.0
    }

    /// The thresholds that mean something for a version that expires at `not_after` and is due
    /// for renewal at `renew_at`: those whose moment comes after the renewal time (a 30-day
    /// warning on a 6-day certificate would fire at issuance and say nothing), and the expiry
    /// itself when listed. Farthest first, each with its moment.
    pub fn applicable(
        &self,
        not_after: OffsetDateTime,
        renew_at: OffsetDateTime,
    ) -> impl Iterator<Item = (u32, OffsetDateTime)> + '_ {
        self.0.iter().filter_map(move |&days| {
            let at = not_after - Duration::days(i64::from(days));
            (days == 0 || at > renew_at).then_some((days, at))
        })
    }

    /// The applicable thresholds crossed by `now`, farthest first.
    pub fn crossed(&self, not_after: OffsetDateTime, renew_at: OffsetDateTime, now: OffsetDateTime) -> Vec<u32> {
        self.applicable(not_after, renew_at)
            .filter(|&(_, at)| at <= now)
            .map(|(days, _)| days)
            .collect()
    }

    /// The next applicable threshold moment after `now`, if any: when a scan has work again.
    pub fn next_after(
        &self,
        not_after: OffsetDateTime,
        renew_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        self.applicable(not_after, renew_at)
            .map(|(_, at)| at)
            .filter(|&at| at > now)
            .min()
    }

    /// Text for storage: `30,14,7,1,0`.
    pub fn to_text(&self) -> String {
        self.0.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }

    /// Parses [`Self::to_text`]'s form (empty: no thresholds).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let days = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| part.parse::<u32>().map_err(|e| format!("threshold {part:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(days).map_err(|e| e.to_string())
    }
}

impl Default for ExpiryThresholds {
    fn default() -> Self {
        Self(vec![30, 14, 7, 1, 0])
    }
}

/// Which "renewal failed" notice a failure of a renewal due at `renew_at` belongs to: one per
/// day of failing (0 for the first day), so a CA outage is reported at once and again each day
/// it lasts, not at every retry. Failures before `renew_at` (a forced renewal) count as day 0.
pub fn renewal_failure_period(renew_at: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (now - renew_at).whole_days().max(0)
}

/// Which events a notifier receives: by kind, and by certificate labels (every listed label must
/// match; events without a certificate, such as an unhealthy issuer, pass a label filter only
/// when it is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The kinds it receives; empty: every kind.
    pub events: Vec<EventKind>,
    /// Labels the certificate must carry with these values.
    pub labels: Vec<(String, String)>,
}

impl Route {
    /// Whether an event of `kind` about a certificate with `labels` (None: no certificate) goes
    /// through this route.
    pub fn accepts(&self, kind: EventKind, labels: Option<&Labels>) -> bool {
        if !self.events.is_empty() && !self.events.contains(&kind) {
            return false;
        }
        if self.labels.is_empty() {
            return true;
        }
        labels.is_some_and(|labels| {
            self.labels
                .iter()
                .all(|(key, value)| labels.as_map().get(key).is_some_and(|v| v == value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(1000 + days)
    }

    #[test]
    fn event_kinds_round_trip_and_unknown_names_are_refused() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert!("expired".parse::<EventKind>().is_err());
    }

    #[test]
    fn thresholds_are_sorted_deduplicated_and_bounded() {
        let t = ExpiryThresholds::new(vec![1, 30, 7, 30, 0]).expect("valid");
        assert_eq!(t.days(), &[30, 7, 1, 0]);
        assert_eq!(ExpiryThresholds::from_text(&t.to_text()), Ok(t));
        assert_eq!(ExpiryThresholds::new(vec![4000]), Err(ThresholdError::TooLarge(4000)));
        assert_eq!(
            ExpiryThresholds::from_text(""),
            Ok(ExpiryThresholds::new(vec![]).expect("empty"))
        );
        assert!(ExpiryThresholds::from_text("7,x").is_err());
    }

    #[test]
    fn a_long_lived_version_crosses_each_threshold_in_turn() {
        // 90 days, renewal due at day 55: every default threshold applies.
        let (not_after, renew_at) = (at(90), at(55));
        let t = ExpiryThresholds::default();
        assert!(t.crossed(not_after, renew_at, at(59)).is_empty());
        assert_eq!(t.crossed(not_after, renew_at, at(60)), vec![30]);
        assert_eq!(t.crossed(not_after, renew_at, at(84)), vec![30, 14, 7]);
        assert_eq!(t.crossed(not_after, renew_at, at(90)), vec![30, 14, 7, 1, 0]);
        assert_eq!(t.next_after(not_after, renew_at, at(61)), Some(at(76)));
        assert_eq!(t.next_after(not_after, renew_at, at(90)), None);
    }

    #[test]
    fn thresholds_before_the_renewal_time_do_not_apply() {
        // 6 days, renewal due at day 4: only "1 day left" and the expiry itself mean anything.
        let t = ExpiryThresholds::default();
        let applicable: Vec<u32> = t.applicable(at(6), at(4)).map(|(d, _)| d).collect();
        assert_eq!(applicable, vec![1, 0]);
        assert!(t.crossed(at(6), at(4), at(1)).is_empty());
        assert_eq!(t.crossed(at(6), at(4), at(6)), vec![1, 0]);
    }

    #[test]
    fn renewal_failures_are_reported_once_a_day() {
        assert_eq!(renewal_failure_period(at(4), at(3)), 0);
        assert_eq!(renewal_failure_period(at(4), at(4) + Duration::hours(23)), 0);
        assert_eq!(renewal_failure_period(at(4), at(5)), 1);
    }

    #[test]
    fn routes_filter_by_kind_and_labels() {
        let labels = Labels::new([("team".to_owned(), "web".to_owned())].into()).expect("labels");
        let all = Route::default();
        assert!(all.accepts(EventKind::Issued, None));
        let failures = Route {
            events: vec![EventKind::RenewalFailed],
            labels: vec![("team".into(), "web".into())],
        };
        assert!(failures.accepts(EventKind::RenewalFailed, Some(&labels)));
        assert!(!failures.accepts(EventKind::Issued, Some(&labels)));
        assert!(!failures.accepts(EventKind::RenewalFailed, None));
        let other = Labels::new([("team".to_owned(), "db".to_owned())].into()).expect("labels");
        assert!(!failures.accepts(EventKind::RenewalFailed, Some(&other)));
    }
}
