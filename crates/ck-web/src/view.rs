//! What pages show, computed without I/O: the shared frame, times for people, the expiry
//! heatmap and pagination.

use time::{Duration, OffsetDateTime};

/// The frame every signed-in page shares.
pub(crate) struct Page {
    pub(crate) title: String,
    /// The navigation entry to mark as current.
    pub(crate) section: &'static str,
    pub(crate) actor: String,
    pub(crate) csrf: String,
    /// Whether to offer the admin pages.
    pub(crate) admin: bool,
    /// Whether to offer the server-wide admin pages (audit, notifications): admin and no
    /// restriction, as in the API.
    pub(crate) server_admin: bool,
    /// Part of static URLs, so caches refresh on upgrade.
    pub(crate) version: &'static str,
}

/// `2026-11-23 14:05 UTC`; `-` for none.
pub(crate) fn when(at: Option<OffsetDateTime>) -> String {
    match at {
        Some(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        None => "-".to_owned(),
    }
}

/// `in 3 days`, `5 hours ago`: the distance from `now`, rounded to the largest unit.
pub(crate) fn relative(at: Option<OffsetDateTime>, now: OffsetDateTime) -> String {
    let Some(at) = at else {
        return "-".to_owned();
    };
    let delta = at - now;
    let magnitude = delta.abs();
    let (n, unit) = if magnitude >= Duration::days(2) {
        (magnitude.whole_days(), "days")
    } else if magnitude >= Duration::hours(2) {
        (magnitude.whole_hours(), "hours")
    } else if magnitude >= Duration::minutes(2) {
        (magnitude.whole_minutes(), "minutes")
    } else {
        return "now".to_owned();
    };
    if delta.is_negative() {
        format!("{n} {unit} ago")
    } else {
        format!("in {n} {unit}")
    }
}

/// One day of the expiry heatmap.
pub(crate) struct HeatDay {
    /// `2026-11-23`.
    pub(crate) date: String,
    pub(crate) count: u64,
    /// 0 (none) to 4 (the busiest days), for the cell's shade.
    pub(crate) level: u8,
}

/// Expiries per day for the `days` days from `now`'s date, with a shade level relative to the
/// busiest day (so a fleet of 10 and one of 10,000 both show their peaks).
pub(crate) fn expiry_heatmap(expiries: &[OffsetDateTime], now: OffsetDateTime, days: usize) -> Vec<HeatDay> {
    let start = now.date();
    let mut counts = vec![0u64; days];
    for at in expiries {
        let offset = (at.date() - start).whole_days();
        if let Some(slot) = usize::try_from(offset).ok().and_then(|i| counts.get_mut(i)) {
            *slot += 1;
        }
    }
    heatmap_of_counts(&counts, now)
}

/// The heatmap of per-day counts starting at `now`'s date.
pub(crate) fn heatmap_of_counts(counts: &[u64], now: OffsetDateTime) -> Vec<HeatDay> {
    let start = now.date();
    let peak = counts.iter().copied().max().unwrap_or(0).max(1);
    counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let date = start + Duration::days(i as i64);
            let level = if count == 0 {
                0
            } else {
                // 1..=4 by quarter of the peak.
                (1 + (count * 4 - 1) / peak).min(4) as u8
            };
            HeatDay {
                date: date.to_string(),
                count,
                level,
            }
        })
        .collect()
}

/// Page links of a list: which page this is, how many there are, and the offsets around it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Pager {
    /// 1-based.
    pub(crate) page: u32,
    pub(crate) pages: u32,
    pub(crate) total: u64,
    pub(crate) previous: Option<u32>,
    pub(crate) next: Option<u32>,
}

/// The pager of page `page` (1-based, clamped) of `total` items, `size` per page.
pub(crate) fn pager(page: u32, size: u32, total: u64) -> Pager {
    let size = size.max(1);
    let pages = u32::try_from(total.div_ceil(u64::from(size)))
        .unwrap_or(u32::MAX)
        .max(1);
    let page = page.clamp(1, pages);
    Pager {
        page,
        pages,
        total,
        previous: (page > 1).then(|| page - 1),
        next: (page < pages).then(|| page + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64, hours: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000 + days) + Duration::hours(hours)
    }

    #[test]
    fn times_read_well() {
        assert_eq!(when(Some(OffsetDateTime::UNIX_EPOCH)), "1970-01-01 00:00 UTC");
        assert_eq!(when(None), "-");
        let now = at(0, 12);
        assert_eq!(relative(Some(at(3, 12)), now), "in 3 days");
        assert_eq!(relative(Some(at(0, 7)), now), "5 hours ago");
        assert_eq!(relative(Some(now + Duration::seconds(30)), now), "now");
        assert_eq!(relative(None, now), "-");
    }

    #[test]
    fn the_heatmap_counts_days_ahead_and_shades_by_the_peak() {
        let now = at(0, 12);
        let expiries = [
            at(0, 20),
            at(1, 1),
            at(1, 2),
            at(1, 3),
            at(1, 4),
            at(89, 0),
            at(90, 0),
            at(-1, 0),
        ];
        let map = expiry_heatmap(&expiries, now, 90);
        assert_eq!(map.len(), 90);
        assert_eq!((map[0].count, map[0].level), (1, 1));
        assert_eq!((map[1].count, map[1].level), (4, 4));
        assert_eq!((map[2].count, map[2].level), (0, 0));
        assert_eq!(map[89].count, 1, "day 90 is outside, yesterday too");
        assert_eq!(map.iter().map(|d| d.count).sum::<u64>(), 6);
    }

    #[test]
    fn pages_are_clamped_and_linked() {
        assert_eq!(
            pager(1, 50, 0),
            Pager {
                page: 1,
                pages: 1,
                total: 0,
                previous: None,
                next: None
            }
        );
        let middle = pager(2, 50, 120);
        assert_eq!((middle.pages, middle.previous, middle.next), (3, Some(1), Some(3)));
        assert_eq!(pager(9, 50, 120).page, 3);
    }
}
