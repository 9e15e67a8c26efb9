//! Security findings: scep.
