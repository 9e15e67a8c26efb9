//! Notifiers: tell people what happened, through one channel each.
