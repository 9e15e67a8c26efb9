//! Security findings: access.
