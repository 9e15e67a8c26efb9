//! The YAML configuration files: `agent.yaml` through the agent's own parser and checks
//! (`AgentConfig::from_yaml`), and the server's `config.yaml` through the same YAML parser
//! (yaml_serde: anchors, aliases, tags, deep nesting) the server uses. Must refuse, never
//! panic or hang.
#![no_main]

use ck_agent::runtime::AgentConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = AgentConfig::from_yaml(text);
    if let Ok(value) = yaml_serde::from_str::<yaml_serde::Value>(text) {
        // Anything the parser accepted can be written back and read again.
        if let Ok(again) = yaml_serde::to_string(&value) {
            let _ = yaml_serde::from_str::<yaml_serde::Value>(&again);
        }
    }
});
