//! ck-notify against real local peers on 127.0.0.1: an HTTP receiver, aiosmtpd, shell scripts.

mod command;
mod config;
mod email;
mod support;
mod webhook;
