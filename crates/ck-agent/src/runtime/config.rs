//! The agent's own configuration file: which certificates this host needs and where they go.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use ck_domain::KeyType;
use serde::Deserialize;

use crate::config::TargetConfig;
use crate::runtime::AgentError;

/// `agent.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The control plane's URL (`--server` overrides it).
    #[serde(default)]
    pub server: Option<String>,
    /// A file holding the agent's token (`--token` and `CERTKEEPER_AGENT_TOKEN` override it).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for an `https://` server with a private certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Where the agent keeps its keys (0700/0600) and the targets' state and journals.
    pub state_dir: PathBuf,
    /// Every target file must lie under one of these directories.
    pub allowed_roots: Vec<PathBuf>,
    /// Seconds between polls; by default what the server asks for (30).
    #[serde(default)]
    pub poll_interval_seconds: Option<u64>,
    /// The certificates this host needs.
    pub certificates: Vec<CertificateEntry>,
}

/// One certificate and its targets.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEntry {
    /// The certificate's name on the server.
    #[serde(default)]
    pub name: Option<String>,
    /// Or: labels that select exactly one of the agent's certificates.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// How keys are made (certificates whose key the agent makes).
    #[serde(default)]
    pub key: KeySettings,
    /// Where the certificate goes.
    pub targets: Vec<TargetConfig>,
}

/// How the agent makes keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// `ecdsa-p256` (default), `ecdsa-p384`, `rsa-2048`, `rsa-3072`, `rsa-4096` or `ed25519`.
    #[serde(default, rename = "type")]
    pub key_type: Option<String>,
    /// Keep the key across renewals instead of making a fresh one each time.
    #[serde(default)]
    pub reuse: bool,
}

impl CertificateEntry {
    /// How the entry is named in messages.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("certificate '{name}'"),
            None => {
                let pairs: Vec<String> = self.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("selector {}", pairs.join(","))
            }
        }
    }

    /// The key type to make (checked at load).
    pub fn key_type(&self) -> KeyType {
        self.key
            .key_type
            .as_deref()
            .and_then(|k| k.parse().ok())
            .unwrap_or(KeyType::EcdsaP256)
    }
}

impl AgentConfig {
    /// Reads and checks the file: unknown fields, entries without a name or selector, bad key
    /// types, duplicate target names are all refused here, before anything runs.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config {
            path: path.to_owned(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::from_yaml(&text).map_err(|reason| AgentError::Config {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and checks the text of an `agent.yaml` (no I/O: `load` reads the file, the fuzz
    /// target `config_yaml` feeds it anything). The error is the reason, without the path.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let config: Self = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.allowed_roots.is_empty() {
            return Err("allowed_roots is empty: list the directories targets may write to".to_owned());
        }
        if self.certificates.is_empty() {
            return Err("certificates is empty: list what this host needs".to_owned());
        }
        let mut target_names = HashSet::new();
        for entry in &self.certificates {
            match (&entry.name, entry.selector.is_empty()) {
                (Some(_), false) | (None, true) => {
                    return Err(format!(
                        "{}: give either a name or a selector (exactly one)",
                        entry.label()
                    ));
                }
                _ => {}
            }
            if let Some(key_type) = &entry.key.key_type {
                key_type
                    .parse::<KeyType>()
                    .map_err(|e| format!("{}: {e}", entry.label()))?;
            }
            if entry.targets.is_empty() {
                return Err(format!("{}: no targets", entry.label()));
            }
            for target in &entry.targets {
                let name = target.target().common().name;
                if !target_names.insert(name.to_owned()) {
                    return Err(format!(
                        "target name '{name}' is used twice: target names must be unique"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where the targets' state and journals live.
    pub fn targets_state_dir(&self) -> PathBuf {
        self.state_dir.join("targets")
    }

    /// Where the keys live.
    pub fn keys_dir(&self) -> PathBuf {
        self.state_dir.join("keys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AgentConfig, String> {
        let config: AgentConfig = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        config.check().map(|()| config)
    }

    const TARGET: &str = "    targets:\n      - type: files\n        name: app\n        cert_path: /srv/a.crt\n        key_path: /srv/a.key\n";

    #[test]
    fn entries_commands_and_key_types_are_checked() {
        let ok = parse(&format!(
            "state_dir: /s\nallowed_roots: [/srv]\ncertificates:\n  - name: a.test\n    key: {{ type: rsa-3072, reuse: true }}\n{TARGET}        reload: [nginx, -s, reload]\n        validate: {{ argv: [nginx, -t] }}\n"
        ))
        .unwrap();
        let entry = &ok.certificates[0];
        assert_eq!((entry.key_type(), entry.key.reuse), (KeyType::Rsa3072, true));
        let TargetConfig::Files(files) = &entry.targets[0] else {
            panic!()
        };
        assert_eq!(files.reload.as_ref().unwrap().argv, ["nginx", "-s", "reload"]);
        assert_eq!(files.validate.as_ref().unwrap().argv, ["nginx", "-t"]);

        let both = parse(&format!(
            "state_dir: /s\nallowed_roots: [/srv]\ncertificates:\n  - name: a.test\n    selector: {{ app: web }}\n{TARGET}"
        ));
        assert!(both.unwrap_err().contains("either a name or a selector"));
        let twice = parse(&format!(
            "state_dir: /s\nallowed_roots: [/srv]\ncertificates:\n  - name: a.test\n{TARGET}  - name: b.test\n{TARGET}"
        ));
        assert!(twice.unwrap_err().contains("target name 'app' is used twice"));
        let bad_key = parse(&format!(
            "state_dir: /s\nallowed_roots: [/srv]\ncertificates:\n  - name: a.test\n    key: {{ type: dsa }}\n{TARGET}"
        ));
        assert!(bad_key.unwrap_err().contains("dsa"));
        let empty_command = parse(&format!(
            "state_dir: /s\nallowed_roots: [/srv]\ncertificates:\n  - name: a.test\n{TARGET}        reload: []\n"
        ));
        assert!(empty_command.unwrap_err().contains("at least its program"));
        let no_roots = parse(&format!(
            "state_dir: /s\nallowed_roots: []\ncertificates:\n  - name: a.test\n{TARGET}"
        ));
        assert!(no_roots.unwrap_err().contains("allowed_roots is empty"));
    }
}
