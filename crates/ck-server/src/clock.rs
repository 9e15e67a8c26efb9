//! The one place that reads the wall clock; everything else takes `now` as an argument.

use time::OffsetDateTime;

/// The current UTC time.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
