//! The agent's deployment side: certificates and keys written to targets on the host.
//!
//! [`deploy`] writes a [`Bundle`] to one [`TargetConfig`] atomically, validates, reloads and
//! optionally verifies what the server serves; [`recover`] finishes the job after a crash. Each
//! kind of target is a small module under [`targets`] implementing [`Target`].

mod bundle;
mod command;
mod config;
mod deploy;
mod error;
mod fsops;
mod journal;
pub mod runtime;
pub mod targets;
mod verify;

pub use bundle::{Bundle, SecretPem};
pub use command::{Command, CommandOutput};
pub use config::{
    ApacheTarget, Common, Endpoint, FilesTarget, HaproxyTarget, JksTarget, NginxTarget, Pkcs12Target, TargetConfig,
};
pub use deploy::{DeployReport, Recovery, deploy, deployed_fingerprint, preflight, recover};
pub use error::DeployError;
pub use targets::{PlannedFile, Target};
pub use verify::fetch_served_leaf_fingerprint;
