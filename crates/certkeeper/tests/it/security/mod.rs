//! One named test per finding of the security review (issue 18): each reproduces the attack
//! against the real binary and asserts that it now fails. None may be `#[ignore]`d.
//!
//! The modules follow the trust boundaries of SECURITY.md.

mod access;
mod issuers;
mod listeners;
mod lows;
mod ocsp;
mod scep;
