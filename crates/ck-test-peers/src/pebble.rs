//! Pebble fixture: to be written.
