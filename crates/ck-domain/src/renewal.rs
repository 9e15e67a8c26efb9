//! When to renew: a point inside each certificate's lifetime, spread by jitter so a fleet issued
//! together does not renew together.

use time::{Duration, OffsetDateTime};

/// What starts the renewal window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RenewalTrigger {
    /// Renew once this fraction of the lifetime has elapsed (Let's Encrypt's advice is 2/3).
    LifetimeFraction(f64),
    /// Renew this many days before expiry.
    DaysBeforeExpiry(u32),
}

/// A renewal policy that makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Fractions must leave time both before and after the renewal point.
    #[error("renewal fraction {0} must be between 0 and 1 (exclusive), e.g. 0.66")]
    BadFraction(f64),
    /// Jitter is a fraction of the lifetime.
    #[error("renewal jitter {0} must be between 0 and 0.5, e.g. 0.05")]
    BadJitter(f64),
    /// At least one day, at most ten years.
    #[error("renew-before of {0} days must be between 1 and 3650")]
    BadDays(u32),
}

/// Where in a certificate's lifetime renewal starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    trigger: RenewalTrigger,
    jitter_fraction: f64,
}

impl RenewalPolicy {
    /// A policy; `jitter_fraction` is the share of the lifetime by which renewal may start
    /// earlier than the trigger.
    pub fn new(trigger: RenewalTrigger, jitter_fraction: f64) -> Result<Self, PolicyError> {
        match trigger {
            RenewalTrigger::LifetimeFraction(f) if !(f > 0.0 && f < 1.0) => return Err(PolicyError::BadFraction(f)),
            RenewalTrigger::DaysBeforeExpiry(d) if !(1..=3650).contains(&d) => return Err(PolicyError::BadDays(d)),
            _ => {}
        }
        if !(0.0..=0.5).contains(&jitter_fraction) {
            return Err(PolicyError::BadJitter(jitter_fraction));
        }
        Ok(Self {
            trigger,
            jitter_fraction,
        })
    }

    /// The trigger.
    pub fn trigger(&self) -> RenewalTrigger {
        self.trigger
    }

    /// The jitter as a fraction of the lifetime.
    pub fn jitter_fraction(&self) -> f64 {
        self.jitter_fraction
    }

    /// The moment renewal becomes due for a certificate valid from `not_before` to `not_after`.
    ///
    /// `jitter_sample` is a uniform random number in `[0, 1)` chosen once per issuance and the
    /// result stored, so a restart does not move the moment. A `DaysBeforeExpiry` that reaches
    /// past the start of a short-lived certificate falls back to half its lifetime, so a 7-day
    /// certificate under a "30 days before" policy is not renewed in a loop. The result is never
    /// before `not_before`.
    pub fn renew_at(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        jitter_sample: f64,
    ) -> OffsetDateTime {
        let lifetime = not_after - not_before;
        if lifetime <= Duration::ZERO {
            return not_before;
        }
        let trigger_at = match self.trigger {
            RenewalTrigger::LifetimeFraction(fraction) => not_before + lifetime * fraction,
            RenewalTrigger::DaysBeforeExpiry(days) => {
                let before = Duration::days(i64::from(days));
                if before >= lifetime {
                    not_before + lifetime / 2
                } else {
                    not_after - before
                }
            }
        };
        let sample = jitter_sample.clamp(0.0, 1.0);
        let earlier = lifetime * (self.jitter_fraction * sample);
        (trigger_at - earlier).max(not_before)
    }
}

impl Default for RenewalPolicy {
    /// Renew at two thirds of the lifetime, spread over 5% of it.
    fn default() -> Self {
        Self {
            trigger: RenewalTrigger::LifetimeFraction(2.0 / 3.0),
            jitter_fraction: 0.05,
        }
    }
}

/// When to renew inside a CA's suggested renewal window (ACME ARI, RFC 9773 §4.2): a uniformly
/// random moment between `start` and `end` (from `jitter_sample` in `[0, 1)`), so a fleet does
/// not renew in lockstep; at once (`now`) when that moment has passed. A window whose end is
/// before its start is taken as the single moment `start`.
pub fn renew_within_window(
    start: OffsetDateTime,
    end: OffsetDateTime,
    now: OffsetDateTime,
    jitter_sample: f64,
) -> OffsetDateTime {
    let span = (end - start).max(Duration::ZERO);
    (start + span * jitter_sample.clamp(0.0, 1.0)).max(now)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn plan(policy: RenewalPolicy, days: i64, sample: f64) -> String {
        let not_before = datetime!(2026-01-01 00:00 UTC);
        let renew_at = policy.renew_at(not_before, not_before + Duration::days(days), sample);
        let offset = renew_at - not_before;
        format!("{:.2}d", offset.as_seconds_f64() / 86_400.0)
    }

    #[test]
    fn fraction_of_lifetime() {
        let policy = RenewalPolicy::new(RenewalTrigger::LifetimeFraction(2.0 / 3.0), 0.0).unwrap();
        assert_eq!(plan(policy, 90, 0.5), "60.00d");
    }

    #[test]
    fn days_before_expiry_and_short_lifetimes() {
        let policy = RenewalPolicy::new(RenewalTrigger::DaysBeforeExpiry(30), 0.0).unwrap();
        assert_eq!(plan(policy, 90, 0.0), "60.00d");
        assert_eq!(plan(policy, 7, 0.0), "3.50d", "falls back to half the lifetime");
    }

    #[test]
    fn jitter_moves_renewal_earlier_only_within_bounds() {
        let policy = RenewalPolicy::default();
        assert_eq!(plan(policy, 90, 0.0), "60.00d");
        assert_eq!(plan(policy, 90, 0.999_999), "55.50d");
        assert_eq!(plan(policy, 90, 7.0), "55.50d", "samples are clamped");
        let wide = RenewalPolicy::new(RenewalTrigger::LifetimeFraction(0.1), 0.5).unwrap();
        assert_eq!(plan(wide, 10, 0.9), "0.00d", "never before not_before");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(RenewalPolicy::new(RenewalTrigger::LifetimeFraction(1.0), 0.0).is_err());
        assert!(RenewalPolicy::new(RenewalTrigger::LifetimeFraction(f64::NAN), 0.0).is_err());
        assert!(RenewalPolicy::new(RenewalTrigger::DaysBeforeExpiry(0), 0.0).is_err());
        assert!(RenewalPolicy::new(RenewalTrigger::LifetimeFraction(0.5), 0.9).is_err());
    }

    #[test]
    fn ari_window_is_sampled_uniformly_and_never_in_the_past() {
        let start = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let end = start + Duration::days(2);
        let before = start - Duration::days(1);
        assert_eq!(renew_within_window(start, end, before, 0.0), start);
        assert_eq!(renew_within_window(start, end, before, 0.5), start + Duration::days(1));
        assert!(renew_within_window(start, end, before, 0.999) < end);
        // Inside or after the window: at once, never in the past.
        let late = end + Duration::hours(1);
        assert_eq!(renew_within_window(start, end, late, 0.3), late);
        // A reversed window collapses to its start; samples outside [0, 1) are clamped.
        assert_eq!(renew_within_window(end, start, before, 0.7), end);
        assert_eq!(renew_within_window(start, end, before, 7.0), end);
    }
}
