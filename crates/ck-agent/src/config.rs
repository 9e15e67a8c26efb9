//! Target configuration as written in the agent's YAML: one entry per target, tagged by `type`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::command::Command;

/// Where to check what a server serves after a deployment.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `host:port` to connect to, e.g. `127.0.0.1:8443`.
    pub address: String,
    /// The server name sent in SNI.
    pub sni: String,
    /// How long to retry until the new certificate is served (default 5).
    #[serde(default = "default_verify_timeout")]
    pub timeout_seconds: u64,
}

fn default_verify_timeout() -> u64 {
    5
}

fn default_command_timeout() -> u64 {
    30
}

/// File modes are written as octal strings ("0640") because YAML integers would be read as decimal.
fn de_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|t| {
        u32::from_str_radix(t.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| serde::de::Error::custom(format!("mode `{t}` is not an octal file mode like \"0640\"")))
    })
    .transpose()
}

/// The settings every target has, borrowed from the target's configuration.
#[derive(Clone, Debug)]
pub struct Common<'a> {
    pub name: &'a str,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    /// Mode of certificate files (default 0644).
    pub mode: u32,
    /// Mode of files holding the key: 0600 unless configured stricter.
    pub key_mode: u32,
    pub validate: Option<&'a Command>,
    pub reload: Option<&'a Command>,
    pub pre_hook: Option<&'a Command>,
    pub post_hook: Option<&'a Command>,
    pub timeout: Duration,
    pub verify: Option<&'a Endpoint>,
}

// Serde cannot combine `flatten` with `deny_unknown_fields`, so the common fields are spliced into
// every target struct by this macro instead of living in a flattened struct.
macro_rules! target_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// A stable name: keys this target's state and journal files in the state directory.
            pub name: String,
            /// Owner of written files (user name or numeric id); unchanged when absent.
            #[serde(default)]
            pub owner: Option<String>,
            /// Group of written files (group name or numeric id); unchanged when absent.
            #[serde(default)]
            pub group: Option<String>,
            /// Mode of certificate files, octal string (default "0644").
            #[serde(default, deserialize_with = "de_mode")]
            pub mode: Option<u32>,
            /// Mode of key files, octal string; bits beyond 0600 are dropped.
            #[serde(default, deserialize_with = "de_mode")]
            pub key_mode: Option<u32>,
            /// Checks the new files; on failure they are rolled back.
            #[serde(default)]
            pub validate: Option<Command>,
            /// Makes the server load the new files.
            #[serde(default)]
            pub reload: Option<Command>,
            /// Runs before anything is written.
            #[serde(default)]
            pub pre_hook: Option<Command>,
            /// Runs after a successful deployment that changed something.
            #[serde(default)]
            pub post_hook: Option<Command>,
            /// Time limit per command, seconds (default 30).
            #[serde(default = "default_command_timeout")]
            pub timeout_seconds: u64,
            /// Endpoint checked after the reload.
            #[serde(default)]
            pub verify: Option<Endpoint>,
        }

        impl $name {
            /// The settings shared by all targets.
            pub fn common(&self) -> Common<'_> {
                Common {
                    name: &self.name,
                    owner: self.owner.as_deref(),
                    group: self.group.as_deref(),
                    mode: self.mode.unwrap_or(0o644),
                    key_mode: self.key_mode.unwrap_or(0o600) & 0o600,
                    validate: self.validate.as_ref(),
                    reload: self.reload.as_ref(),
                    pre_hook: self.pre_hook.as_ref(),
                    post_hook: self.post_hook.as_ref(),
                    timeout: Duration::from_secs(self.timeout_seconds),
                    verify: self.verify.as_ref(),
                }
            }
        }
    };
}

target_struct! {
    /// Plain PEM files: leaf, chain, full chain, key; `combined_path` holds full chain + key.
    FilesTarget {
        /// The leaf certificate alone.
        cert_path: PathBuf,
        /// The private key.
        key_path: PathBuf,
        /// The intermediates alone.
        #[serde(default)]
        chain_path: Option<PathBuf>,
        /// Leaf followed by intermediates.
        #[serde(default)]
        fullchain_path: Option<PathBuf>,
        /// Full chain followed by the key, in one file (written 0600).
        #[serde(default)]
        combined_path: Option<PathBuf>,
    }
}

target_struct! {
    /// nginx: full chain and key; validates with `nginx -t` and reloads with `nginx -s reload`
    /// when `config` is given and no explicit commands are.
    NginxTarget {
        /// `ssl_certificate` file: leaf followed by intermediates.
        cert_path: PathBuf,
        /// `ssl_certificate_key` file.
        key_path: PathBuf,
        /// The nginx configuration file, for the default validate and reload commands.
        #[serde(default)]
        config: Option<PathBuf>,
        /// nginx's error log for those commands (`-e`), so they never touch /var/log/nginx.
        #[serde(default)]
        error_log: Option<PathBuf>,
        /// The nginx program (default `nginx`, looked up in PATH).
        #[serde(default)]
        binary: Option<PathBuf>,
    }
}

target_struct! {
    /// HAProxy: one PEM holding full chain and key. With `runtime_api_socket` the new certificate
    /// is also pushed into the running process (memory only, hence the file write too).
    HaproxyTarget {
        /// The `crt` file: leaf, intermediates, key (written 0600).
        pem_path: PathBuf,
        /// Admin socket (`stats socket ... level admin`) for `set ssl cert` + `commit ssl cert`.
        #[serde(default)]
        runtime_api_socket: Option<PathBuf>,
        /// The certificate's name in HAProxy when it differs from `pem_path` (as written in the config).
        #[serde(default)]
        runtime_cert_name: Option<String>,
        /// The HAProxy configuration, for the default validation `haproxy -c -q -f <config>`.
        #[serde(default)]
        config: Option<PathBuf>,
        /// The haproxy program (default `haproxy`, looked up in PATH).
        #[serde(default)]
        binary: Option<PathBuf>,
    }
}

target_struct! {
    /// Apache httpd (`SSLCertificateFile`, `SSLCertificateKeyFile`, `SSLCertificateChainFile`).
    ApacheTarget {
        /// The leaf certificate.
        cert_path: PathBuf,
        /// The private key.
        key_path: PathBuf,
        /// The intermediates.
        chain_path: PathBuf,
    }
}

target_struct! {
    /// A PKCS#12 keystore with the key and the chain under one alias.
    Pkcs12Target {
        /// The `.p12` file (written 0600).
        path: PathBuf,
        /// File holding the keystore password (read at deploy time; trailing newline ignored).
        password_file: PathBuf,
        /// The entry's alias (default `certkeeper`).
        #[serde(default)]
        alias: Option<String>,
    }
}

target_struct! {
    /// A Java KeyStore (JKS) with the key and the chain under one alias.
    JksTarget {
        /// The `.jks` file (written 0600).
        path: PathBuf,
        /// File holding the store password, also used for the key (trailing newline ignored).
        password_file: PathBuf,
        /// The entry's alias (default `certkeeper`).
        #[serde(default)]
        alias: Option<String>,
    }
}

/// One deployment target, as configured in the agent's YAML (`type: nginx`, ...).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TargetConfig {
    Files(FilesTarget),
    Nginx(NginxTarget),
    Haproxy(HaproxyTarget),
    Apache(ApacheTarget),
    Pkcs12(Pkcs12Target),
    Jks(JksTarget),
}
