//! certkeeper-tls: live certificate hot-swap, SNI selection and automatic ACME certificates for rustls servers.
