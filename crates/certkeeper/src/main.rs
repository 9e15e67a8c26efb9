//! The `certkeeper` binary: the control plane (`serve`), the CLI verbs and `bench`.
//!
//! This is the only crate that uses `anyhow`: errors end here as one line for the user.

mod agent;
mod bench;
mod bench_agents;
mod bench_cluster;
mod bench_crl;
mod bench_notify;
mod bench_ocsp;
mod bench_ui;
mod challenge_listeners;
mod cli;
mod commands;
mod config;
mod files;
mod secrets;
mod serve;
mod tls_listener;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes, no backtrace.
            let mut message = error.to_string();
            for cause in error.chain().skip(1) {
                // Library errors often name their source in their own message already.
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
