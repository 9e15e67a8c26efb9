//! Repository automation for certkeeper.
//!
//! The tidy checks (dependency direction, module docs, migration parity, ...)
//! live in `tidy.rs` and run as ordinary tests, so plain `cargo test` enforces
//! them. `cargo run -p xtask -- tidy` is a shortcut for `cargo test -p xtask`.

use std::process::ExitCode;

#[cfg(test)]
mod tidy;

const USAGE: &str = "\
usage: cargo run -p xtask -- <task>

tasks:
  tidy    run the repository tidy checks (same as `cargo test -p xtask`)
  help    print this message

The tidy checks are plain tests in xtask/src/tidy.rs; `cargo test` runs them too.";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("tidy") => run_tidy(),
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Runs `cargo test -p xtask`, which is where the tidy checks live.
fn run_tidy() -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    match std::process::Command::new(cargo).args(["test", "-p", "xtask"]).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: could not start `cargo test -p xtask`: {err}");
            ExitCode::FAILURE
        }
    }
}
