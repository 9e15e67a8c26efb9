//! The `certkeeper` binary: the control plane (`serve`, from the `certkeeper` library), the CLI
//! verbs and the agent. The benchmarks are the separate `certkeeper-bench` (crate `ck-bench`).
//!
//! Errors end here (and in the library's `run_main`) as one line for the user.

mod agent;
mod cli;
mod commands;

use clap::Parser;

use crate::cli::{Cli, Command, SecretsCommand};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    certkeeper::run_main(run(cli))
}

/// Runs the chosen command. Here rather than in `cli.rs`, so the verbs' modules import the
/// argument types from `cli` and nothing imports back.
async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => certkeeper::serve::run(args).await,
        Command::Cert(command) => commands::cert(command).await,
        Command::Issuer(command) => commands::issuer(command).await,
        Command::Job(command) => commands::job(command).await,
        Command::Notification(command) => commands::notification(command).await,
        Command::Agents(command) => commands::agents(command).await,
        Command::Token(command) => commands::token(command).await,
        Command::Audit(args) => commands::audit(args).await,
        Command::Secrets(SecretsCommand::RotateKek { serve, json }) => {
            let settings = certkeeper::config::Settings::load(&serve)?;
            certkeeper::secrets::rotate(&settings.database, &settings.kek, json).await
        }
        Command::Agent(args) => agent::run(args).await,
    }
}
