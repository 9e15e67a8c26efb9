//! Security findings: listeners.
