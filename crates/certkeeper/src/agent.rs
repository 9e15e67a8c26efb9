//! `certkeeper agent`: settings from flags, variables and the config file, then the runtime of
//! `ck-agent` until a signal.

use anyhow::Context;
use ck_agent::runtime::{Agent, AgentConfig};

use crate::cli::AgentArgs;

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    certkeeper::serve::init_logging();
    let config = AgentConfig::load(&args.config)?;
    let server = args.server.clone().or_else(|| config.server.clone()).context(
        "no server URL: pass --server https://ck.example:8989 (or CERTKEEPER_SERVER, or `server:` in the config)",
    )?;
    let token = match (&args.token, args.token_file.as_ref().or(config.token_file.as_ref())) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!(
            "no agent token: pass --token-file (or CERTKEEPER_AGENT_TOKEN, or `token_file:` in the config); \
             `certkeeper agents add <name>` prints one"
        ),
    };
    let ca_pem = match &config.ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read the CA file {}", path.display()))?),
        None => None,
    };
    let client =
        ck_client::Client::with_options(&server, &token, ca_pem.as_deref(), std::time::Duration::from_secs(60))?;
    let mut agent = Agent::start(config, client)?;
    if args.once {
        let summary = agent.cycle().await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            println!(
                "{} CSR(s) sent, {} target(s) deployed, {} failed",
                summary.csrs_sent.len(),
                summary.deployed.len(),
                summary.failed.len()
            );
        }
        if let Some((target, error)) = summary.failed.first() {
            anyhow::bail!("deployment to target '{target}' failed: {error}");
        }
        return Ok(());
    }
    tracing::info!(server = %server, "agent started");
    agent.run(certkeeper::serve::wait_for_signal()).await?;
    tracing::info!("agent stopped");
    Ok(())
}
