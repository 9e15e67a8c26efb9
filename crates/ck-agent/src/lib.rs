//! The agent: keys made where they are used, certificates deployed to targets.
