//! A simulated month of the renewal control plane, every decision taken by the pure domain rules.
//!
//! Modelled: a fleet of certificates with short lifetimes; the renewal scan every minute, which
//! enqueues one job for each due certificate without an active job and without a job that failed
//! for good less than the cooldown ago (the store's `due_for_renewal`, with `failed_cooldown =
//! config.retry.max_delay`: 15 minutes with `RetryPolicy::default()`); the workers' attempts
//! against a CA that is unreachable during injected outages, with `RetryPolicy` backoff between
//! a job's attempts; the "renewal failed" and "threshold crossed" notifications, deduplicated by
//! the keys the store keeps unique. When to renew, how long to back off, which thresholds are
//! crossed and which daily failure notice an attempt belongs to all come from ck-domain, with the
//! simulated clock and seeded random samples.
//!
//! Not modelled: the SQL of the scan and its batch limit, worker concurrency and leases, network
//! and CA latency (an attempt takes no time), CA rate limits and errors other than unreachability
//! (so no permanent failures), forced renewals and requeued jobs, the delivery of notifications
//! (they are recorded, not sent), agents and deployment, ARI windows.
//!
//! The simulation is event-driven. A scan of the whole fleet every minute would find nothing to do
//! for a certificate until it becomes due, its cooldown ends or it crosses a threshold, so each
//! certificate is visited only at the first scan tick at which one of those happens: the same
//! outcome in far fewer events. During an outage a due certificate still gets a job failing all its
//! 5 attempts every 16 or 17 minutes (attempts, cooldown, next scan tick): 1.4 million attempts in
//! the 5-day outage, 7 to 9 s simulated one by one in a debug build (the `time` arithmetic of every
//! event is not optimised there), under 1 s when counted. So jobs that would fail exactly like the
//! simulated one before them (CA still down until their last retry, same day of failing, hence the
//! same notification key) are counted at one per cooldown and scan interval, an upper bound (under
//! 0.3 % above the exact count in both scenarios), instead of simulated. The first failures of an
//! outage, those of each new day and the ones around the CA's return are simulated attempt by
//! attempt.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::time::Instant;

use ck_domain::{EventKind, ExpiryThresholds, RenewalPolicy, RenewalTrigger, RetryPolicy, renewal_failure_period};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const FLEET: usize = 1_000;
const LIFETIME: Duration = Duration::days(6);
const SIMULATED: Duration = Duration::days(30);
const SCAN_INTERVAL: Duration = Duration::minutes(1);
const START: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const SEED: u64 = 0x5eed_0fce_57ed_f1ee;

/// What differs between runs: when the CA is unreachable, as (start day after `START`, hours),
/// in time order.
struct Scenario(&'static [(i64, i64)]);

/// When the CA is unreachable: from, until.
type Outage = (OffsetDateTime, OffsetDateTime);

/// What the tests assert beyond the invariants `simulate` checks itself.
struct Summary {
    renewals_per_certificate: (usize, usize),
    expired: usize,
}

/// splitmix64: a fixed seed gives every run the same fleet and the same jitter.
struct SplitMix64(u64);

impl SplitMix64 {
    /// Uniform in `[0, 1)`, the range the domain's jitter samples expect.
    fn sample(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1_u64 << 53) as f64
    }
}

struct Version {
    renew_at: OffsetDateTime,
    not_after: OffsetDateTime,
    replaced_at: Option<OffsetDateTime>,
}

impl Version {
    fn issue(policy: &RenewalPolicy, not_before: OffsetDateTime, jitter_sample: f64) -> Self {
        let not_after = not_before + LIFETIME;
        let renew_at = policy.renew_at(not_before, not_after, jitter_sample);
        Self {
            renew_at,
            not_after,
            replaced_at: None,
        }
    }
}

#[derive(Default)]
struct SimulatedCertificate {
    versions: Vec<Version>,
    /// Attempts made by the active job; `None` when no job is active.
    job_attempts: Option<u32>,
    /// Until when the scan enqueues no job: the cooldown after the last job that failed for good
    /// (after counted jobs, the tick of the next simulated one).
    cooldown_until: Option<OffsetDateTime>,
    /// The earliest scan queued for this certificate; queued scans at other times are stale.
    next_scan: Option<OffsetDateTime>,
    /// (version index, failure period, failed attempts), in time order: kept apart from the
    /// notifications so that the check compares two independent records.
    failures: Vec<(usize, i64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Scan,
    Attempt,
}

/// The store's unique key of a notice: event, certificate, version, and the failure period or
/// the threshold's days.
type NoticeKey = (EventKind, usize, usize, i64);

struct Simulation {
    outages: Vec<Outage>,
    end: OffsetDateTime,
    policy: RenewalPolicy,
    retry: RetryPolicy,
    /// The longest a job's attempts can span: every retry at its longest delay.
    longest_job: Duration,
    thresholds: ExpiryThresholds,
    rng: SplitMix64,
    certificates: Vec<SimulatedCertificate>,
    queue: BinaryHeap<Reverse<(OffsetDateTime, Action, usize)>>,
    notices_sent: HashSet<NoticeKey>,
    notice_log: Vec<(NoticeKey, OffsetDateTime)>,
    failed_attempts: u64,
    jobs_failed: u64,
    /// Failing jobs counted instead of simulated (see `after_failed_job`).
    counted_jobs: u64,
    /// Failed attempts, simulated and counted, by hour since `START`: the CA's load in outages.
    failed_per_hour: Vec<u64>,
    shortest_remaining_at_renewal: Duration,
}

impl Simulation {
    /// The end of the outage under way at `at`, if any.
    fn outage_until(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        self.outages
            .iter()
            .find(|&&(from, until)| from <= at && at < until)
            .map(|&(_, until)| until)
    }

    fn notify(&mut self, key: NoticeKey, at: OffsetDateTime) {
        if self.notices_sent.insert(key) {
            self.notice_log.push((key, at));
        }
    }

    /// Queues the certificate for the first scan tick at or after `at`, unless an earlier scan is
    /// already queued (that scan queues the next one).
    fn scan_from(&mut self, index: usize, at: OffsetDateTime) {
        let tick = scan_tick_at_or_after(at);
        let certificate = &mut self.certificates[index];
        if certificate.next_scan.is_none_or(|queued| tick < queued) {
            certificate.next_scan = Some(tick);
            self.queue.push(Reverse((tick, Action::Scan, index)));
        }
    }

    fn scan(&mut self, index: usize, now: OffsetDateTime) {
        let certificate = &mut self.certificates[index];
        if certificate.next_scan != Some(now) {
            return;
        }
        certificate.next_scan = None;
        let version = certificate.versions.len() - 1;
        let (renew_at, not_after) = (
            certificate.versions[version].renew_at,
            certificate.versions[version].not_after,
        );
        // The store's `renew_at <= now AND NOT EXISTS (job failed with finished_at > now - cooldown)`.
        let due_at = certificate.cooldown_until.map_or(renew_at, |until| until.max(renew_at));
        if certificate.job_attempts.is_none() && due_at <= now {
            certificate.job_attempts = Some(0);
            self.queue.push(Reverse((now, Action::Attempt, index)));
        }
        for days in self.thresholds.crossed(not_after, renew_at, now) {
            self.notify((EventKind::ThresholdCrossed, index, version, i64::from(days)), now);
        }
        let threshold = self.thresholds.next_after(not_after, renew_at, now);
        let due = self.certificates[index].job_attempts.is_none().then_some(due_at);
        if let Some(next) = threshold.into_iter().chain(due).min() {
            self.scan_from(index, next);
        }
    }

    fn attempt(&mut self, index: usize, now: OffsetDateTime) {
        let reachable = self.outage_until(now).is_none();
        let sample = self.rng.sample();
        let certificate = &mut self.certificates[index];
        let attempts_made = certificate.job_attempts.expect("attempts run only for an active job") + 1;
        let version = certificate.versions.len() - 1;
        let current = &mut certificate.versions[version];
        if reachable {
            let early = current.renew_at > now;
            assert!(
                !early,
                "certificate {index} version {version} renewed before its window, at {now}"
            );
            self.shortest_remaining_at_renewal = self.shortest_remaining_at_renewal.min(current.not_after - now);
            current.replaced_at = Some(now);
            certificate.versions.push(Version::issue(&self.policy, now, sample));
            certificate.job_attempts = None;
            let renew_at = certificate.versions[version + 1].renew_at;
            self.scan_from(index, renew_at);
            return;
        }
        self.failed_attempts += 1;
        self.failed_per_hour[hour_of(now)] += 1;
        let period = renewal_failure_period(current.renew_at, now);
        match certificate.failures.last_mut() {
            Some((v, p, count)) if (*v, *p) == (version, period) => *count += 1,
            _ => certificate.failures.push((version, period, 1)),
        }
        self.notify((EventKind::RenewalFailed, index, version, period), now);
        let certificate = &mut self.certificates[index];
        match self.retry.next_delay(attempts_made, sample) {
            Some(delay) => {
                certificate.job_attempts = Some(attempts_made);
                self.queue.push(Reverse((now + delay, Action::Attempt, index)));
            }
            None => {
                certificate.job_attempts = None;
                self.jobs_failed += 1;
                self.after_failed_job(index, now, period);
            }
        }
    }

    /// Starts the cooldown (`failed_cooldown` is `config.retry.max_delay`). The jobs after it that
    /// fail like this one (see the module docs) are counted; the scan enqueues the first other one.
    fn after_failed_job(&mut self, index: usize, failed_at: OffsetDateTime, period: i64) {
        let renew_at = self.certificates[index].versions.last().expect("a version").renew_at;
        let limit = self
            .outage_until(failed_at)
            .map_or(self.end, |until| until.min(self.end));
        let fails_alike = |job: OffsetDateTime| {
            let last_attempt = job + self.longest_job;
            last_attempt < limit && renewal_failure_period(renew_at, last_attempt) == period
        };
        let mut next_job = scan_tick_at_or_after(failed_at + self.retry.max_delay);
        let mut counted_jobs = 0;
        while fails_alike(next_job) {
            self.failed_per_hour[hour_of(next_job)] += u64::from(self.retry.max_attempts);
            counted_jobs += 1;
            next_job += self.retry.max_delay + SCAN_INTERVAL;
        }
        self.counted_jobs += counted_jobs;
        let certificate = &mut self.certificates[index];
        certificate.failures.last_mut().expect("this failure").2 += counted_jobs * u64::from(self.retry.max_attempts);
        certificate.cooldown_until = Some(next_job);
        self.scan_from(index, next_job);
    }
}

/// The hour since `START` that `at` falls in.
fn hour_of(at: OffsetDateTime) -> usize {
    usize::try_from((at - START).whole_hours()).expect("after START")
}

/// Scans run at `START` and every `SCAN_INTERVAL` after.
fn scan_tick_at_or_after(at: OffsetDateTime) -> OffsetDateTime {
    let interval = SCAN_INTERVAL.whole_nanoseconds();
    let ticks = ((at - START).whole_nanoseconds().max(0) + interval - 1) / interval;
    START + Duration::nanoseconds(i64::try_from(ticks * interval).expect("a month fits in i64 ns"))
}

/// The longest stretch of `[from, until)` during which the CA was reachable.
fn longest_reachable(outages: &[Outage], from: OffsetDateTime, until: OffsetDateTime) -> Duration {
    let mut longest = Duration::ZERO;
    let mut reachable_since = from;
    for &(down, up) in outages.iter().filter(|&&(down, up)| up > from && down < until) {
        longest = longest.max(down - reachable_since);
        reachable_since = up;
    }
    longest.max(until - reachable_since)
}

fn simulate(scenario: &Scenario) -> Summary {
    let started = Instant::now();
    let day = |day| START + Duration::days(day);
    let outages = scenario
        .0
        .iter()
        .map(|&(d, hours)| (day(d), day(d) + Duration::hours(hours)));
    let policy = RenewalPolicy::new(RenewalTrigger::LifetimeFraction(2.0 / 3.0), 0.05).expect("a valid policy");
    let retry = RetryPolicy::default();
    let mut rng = SplitMix64(SEED);
    // Issued within the last four days, so that the fleet does not renew in one burst.
    let certificates = (0..FLEET)
        .map(|_| SimulatedCertificate {
            versions: vec![Version::issue(
                &policy,
                START - Duration::days(4) * rng.sample(),
                rng.sample(),
            )],
            ..SimulatedCertificate::default()
        })
        .collect();
    let mut sim = Simulation {
        outages: outages.collect(),
        end: START + SIMULATED,
        policy,
        retry,
        // A sample of 0 gives each retry its longest delay.
        longest_job: (1..retry.max_attempts).filter_map(|n| retry.next_delay(n, 0.0)).sum(),
        thresholds: ExpiryThresholds::default(),
        rng,
        certificates,
        queue: BinaryHeap::new(),
        notices_sent: HashSet::new(),
        notice_log: Vec::new(),
        failed_attempts: 0,
        jobs_failed: 0,
        counted_jobs: 0,
        failed_per_hour: vec![0; hour_of(START + SIMULATED) + 1],
        shortest_remaining_at_renewal: LIFETIME,
    };
    for index in 0..FLEET {
        sim.scan_from(index, START);
    }
    while let Some(Reverse((now, action, index))) = sim.queue.pop() {
        if now > sim.end {
            break;
        }
        match action {
            Action::Scan => sim.scan(index, now),
            Action::Attempt => sim.attempt(index, now),
        }
    }
    let elapsed = started.elapsed();

    // Any moment of a window is followed by an attempt within a retry delay, or within a cooldown
    // (as long as the longest retry delay) and a scan interval.
    let enough_to_renew = sim.retry.max_delay + SCAN_INTERVAL;
    let (mut expired, mut expired_while_reachable, mut expired_unannounced) = (0, 0, 0);
    for (index, certificate) in sim.certificates.iter().enumerate() {
        for (v, version) in certificate.versions.iter().enumerate() {
            if version.not_after > version.replaced_at.unwrap_or(sim.end) {
                continue;
            }
            expired += 1;
            let window = longest_reachable(&sim.outages, version.renew_at.max(START), version.not_after);
            expired_while_reachable += usize::from(window >= enough_to_renew);
            let announced = |days| {
                sim.notices_sent
                    .contains(&(EventKind::ThresholdCrossed, index, v, days))
            };
            expired_unannounced += usize::from(!(announced(0) && announced(1)));
        }
    }
    let per_certificate: Vec<usize> = sim.certificates.iter().map(|c| c.versions.len() - 1).collect();
    let renewals_per_certificate = (
        per_certificate.iter().copied().min().unwrap_or(0),
        per_certificate.iter().copied().max().unwrap_or(0),
    );
    let outage_hours: i64 = scenario.0.iter().map(|&(_, hours)| hours).sum();
    let all_failed: u64 = sim.failed_per_hour.iter().sum();
    let peak_per_hour = sim.failed_per_hour.iter().copied().max().unwrap_or(0);
    let mut renewal_failed_notices = 0;
    let mut threshold_notices = BTreeMap::new();
    for &((kind, index, v, detail), at) in &sim.notice_log {
        if kind == EventKind::RenewalFailed {
            renewal_failed_notices += 1;
            continue;
        }
        *threshold_notices.entry(detail).or_insert(0) += 1;
        let version = &sim.certificates[index].versions[v];
        // A scan's notice may share its instant with the renewal by the job it enqueued.
        let on_time = at >= version.not_after - Duration::days(detail) && version.replaced_at.is_none_or(|r| r >= at);
        assert!(
            on_time,
            "certificate {index} version {v}: {detail}-day notice off time, at {at}"
        );
    }

    let outages: Vec<_> = scenario
        .0
        .iter()
        .map(|(d, hours)| format!("{hours}h @ day {d}"))
        .collect();
    let by_threshold: Vec<_> = threshold_notices
        .iter()
        .rev()
        .map(|(d, n)| format!("{d} d: {n}"))
        .collect();
    let (min, max) = renewals_per_certificate;
    println!(
        "simulated month: {FLEET} certificates, 6-day lifetime, renewal at 1/3 left, outages {}\n\
         \x20 renewals ok         {:>9}   (per certificate min {min} max {max})\n\
         \x20 failed attempts     {:>9}   jobs failed for good {}   (simulated one by one)\n\
         \x20   counted in outages  ≤ {}   jobs ≤ {}   (one job per {} min, see the module docs)\n\
         \x20 CA load in outages  attempts per hour max ≤ {}  mean ≤ {}   (over {outage_hours} h)\n\
         \x20 notifications       renewal_failed {}  threshold_crossed {}  (by threshold: {})\n\
         \x20 expired while CA reachable in window: {expired_while_reachable}   expired in all: {expired}\n\
         \x20 shortest remaining lifetime at renewal: {}\n\
         \x20 simulated in {:.2} s",
        outages.join(" and "),
        grouped(per_certificate.iter().sum::<usize>() as u64),
        grouped(sim.failed_attempts),
        grouped(sim.jobs_failed),
        grouped(sim.counted_jobs * u64::from(sim.retry.max_attempts)),
        grouped(sim.counted_jobs),
        (sim.retry.max_delay + SCAN_INTERVAL).whole_minutes(),
        grouped(peak_per_hour),
        grouped(all_failed / outage_hours.max(1) as u64),
        grouped(renewal_failed_notices),
        grouped(threshold_notices.values().sum()),
        by_threshold.join(", "),
        days_hours(sim.shortest_remaining_at_renewal),
        elapsed.as_secs_f64(),
    );

    let why = format!("CA reachable for {enough_to_renew} of the renewal window");
    assert_eq!(expired_while_reachable, 0, "certificates expired although the {why}");
    assert_eq!(expired_unannounced, 0, "expired versions lack a 1-day or 0-day notice");
    let distinct_notices: HashSet<NoticeKey> = sim.notice_log.iter().map(|&(key, _)| key).collect();
    let sent_twice = sim.notice_log.len() - distinct_notices.len();
    assert_eq!(sent_twice, 0, "notifications sent twice for one key");
    let mut failure_keys = 0;
    for (index, certificate) in sim.certificates.iter().enumerate() {
        for &(v, period, attempts) in &certificate.failures {
            failure_keys += 1;
            let notified = distinct_notices.contains(&(EventKind::RenewalFailed, index, v, period));
            assert!(
                notified,
                "certificate {index} version {v} day {period}: {attempts} failures, no notice"
            );
        }
    }
    assert_eq!(
        renewal_failed_notices, failure_keys,
        "renewal_failed notices without failures"
    );
    Summary {
        renewals_per_certificate,
        expired,
    }
}

/// `12345` as `12 345`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// `1 d 2 h 5 min`, negative when the renewal came after the expiry.
fn days_hours(d: Duration) -> String {
    let sign = if d.is_negative() { "-" } else { "" };
    let minutes = d.abs().whole_minutes();
    format!(
        "{sign}{} d {} h {} min",
        minutes / 1440,
        minutes / 60 % 24,
        minutes % 60
    )
}

#[test]
fn two_day_outages_expire_nothing_and_every_failure_is_notified() {
    let summary = simulate(&Scenario(&[(5, 48), (17, 48)]));
    // Every renewal window is at least 2 days long and no outage is longer.
    assert_eq!(summary.expired, 0, "certificates expired in 48-hour outages");
    // A renewal every 3.7 to 4 days makes 7 or 8 in 30 days; an outage may push one past the end.
    let (min, max) = summary.renewals_per_certificate;
    assert!(
        min >= 6 && max <= 9,
        "renewals per certificate {min}..{max}, not about 30 / 4"
    );
}

#[test]
fn a_five_day_outage_expires_certificates_and_announces_it() {
    let summary = simulate(&Scenario(&[(10, 120)]));
    // A 5-day outage covers whole renewal windows; `simulate` checks that each expiry is announced.
    assert!(summary.expired > 0, "nothing expired in a 5-day outage");
}
