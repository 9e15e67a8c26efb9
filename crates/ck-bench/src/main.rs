//! `certkeeper-bench`: the benchmarks of certkeeper, a program apart from the shipped
//! `certkeeper` binary, which carries none of their code. It drives the same server code
//! (the `certkeeper` library): in its own process for issuance, notifications and the UI, and
//! as a child process (its hidden `serve` command, which is `certkeeper serve`) for the agent
//! fleet, OCSP and the cluster, so the server's CPU time is its own.
//!
//! Benchmarks report what they saw and assert nothing about timings.

mod agents;
mod cluster;
mod crl;
mod figures;
mod issuance;
mod load;
mod notifications;
mod ocsp;
mod server;
mod ui;

use clap::{Parser, Subcommand};

/// Measure certkeeper. Without a subcommand: issuance throughput end to end through the API
/// (a server in this process); the subcommands measure an agent fleet's load, CRL signing,
/// the OCSP responder, a cluster, the notification outbox and the web UI.
#[derive(Debug, Parser)]
#[command(name = "certkeeper-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    issuance: issuance::IssuanceArgs,
}

/// The measurements besides issuance throughput.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of the biggest variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
enum BenchCommand {
    /// Load one control plane (a child process on 127.0.0.1) with a simulated agent fleet: every
    /// agent heartbeats and polls for work once per 30 s. Reports the server's CPU and the poll
    /// latency (a benchmark: it reports, it asserts nothing).
    Agents(agents::AgentsArgs),
    /// Sign CRLs of the local CA with many revoked serials: time and size per CRL, with
    /// `openssl crl` parsing the same CRL as a reference.
    Crl(crl::CrlArgs),
    /// Compare the local CA's OCSP responder (answers from its cache, and answers signed fresh for
    /// requests with a nonce) with `openssl ocsp` as a responder on the same certificates:
    /// responses/s and latency, one target after the other (a benchmark: it asserts nothing).
    /// openssl's responder binds every interface: run it through scripts/bench-ocsp.sh, which
    /// starts it in a private network namespace.
    Ocsp(ocsp::OcspArgs),
    /// Several `certkeeper serve` nodes on one PostgreSQL: issuance throughput through the API
    /// with 1, 2 and 3 nodes (local CA), then the leader killed with SIGKILL again and again and
    /// the time until another node leads, as a distribution. scripts/bench-cluster.sh starts a
    /// throwaway PostgreSQL for it.
    Cluster(cluster::ClusterArgs),
    /// What the notification outbox costs: the same signed webhook notifier delivers N messages
    /// to a receiver in this process, once called directly (the baseline) and once through the
    /// control plane (events stored, routed, claimed, sent, recorded); also routing alone.
    Notifications(notifications::NotificationsArgs),
    /// How long the web UI's pages take with a large inventory: N certificates issued first,
    /// then every main page fetched again and again with a signed-in session (p50, p99, max),
    /// beside the API's list of 50 as the reference.
    Ui(ui::UiArgs),
    /// `certkeeper serve` itself: the server process that `agents`, `ocsp` and `cluster` start.
    #[command(hide = true)]
    Serve(certkeeper::config::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    certkeeper::run_main(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => issuance::run(cli.issuance).await,
        Some(BenchCommand::Agents(args)) => agents::run(args).await,
        Some(BenchCommand::Crl(args)) => crl::run(args).await,
        Some(BenchCommand::Ocsp(args)) => ocsp::run(args).await,
        Some(BenchCommand::Cluster(args)) => cluster::run(args).await,
        Some(BenchCommand::Notifications(args)) => notifications::run(args).await,
        Some(BenchCommand::Ui(args)) => ui::run(args).await,
        Some(BenchCommand::Serve(args)) => certkeeper::serve::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    /// clap checks the whole command tree (duplicate names, conflicting flags) only when a
    /// subcommand is run; this runs every check at once.
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
