//! Security findings: ocsp.
