//! BIND9 (named) fixture: to be written.
