//! ACME (RFC 8555) issuance flow.
