//! Security findings: lows.
