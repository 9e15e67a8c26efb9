//! Security findings: issuers.
