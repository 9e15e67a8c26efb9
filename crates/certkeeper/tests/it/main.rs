//! End-to-end tests of the real `certkeeper` binary: a server on a temp data dir and a free
//! port, driven through the CLI and raw HTTP, with `openssl` as the independent verifier.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

mod access;
mod acme;
mod agent_deploy;
mod agents;
mod bad_input;
mod cluster;
mod crash;
mod metrics;
mod newcomer;
mod notifications;
mod openapi;
mod pki;
mod security;
mod tls_library;
mod ui;
