//! Enrollment protocols for devices: EST (RFC 7030) and SCEP (RFC 8894). Each is a service of
//! its own on top of the certificates service, so an enrolled certificate is in the inventory
//! like any other; `enroll` holds what both share.

mod enroll;
pub(crate) mod est;
pub(crate) mod scep;
