//! dns-01 record providers and the propagation check.
