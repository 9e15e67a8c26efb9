//! Repository automation for certkeeper.
//!
//! The tidy checks (dependency direction, module docs, migration parity, ...)
//! live in `tidy.rs` and run as ordinary tests, so plain `cargo test` enforces
//! them. `cargo run -p xtask -- tidy` is a shortcut for `cargo test -p xtask`.
//! `cargo run -p xtask -- modules` prints the module import graphs that
//! `modgraph.rs` builds (the tidy checks use them too).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod modgraph;
#[cfg(test)]
mod tidy;

const USAGE: &str = "\
usage: cargo run -p xtask -- <task>

tasks:
  tidy     run the repository tidy checks (same as `cargo test -p xtask`)
  modules [--root DIR] [CRATE...]
           print each crate's module -> module import edges and its import
           cycles (default: every crate under crates/, and xtask; DIR
           defaults to this repository)
  help     print this message

The tidy checks are plain tests in xtask/src/tidy.rs; `cargo test` runs them too.";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("tidy") => run_tidy(),
        Some("modules") => run_modules(std::env::args().skip(2).collect()),
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

/// Prints the module graph of each crate named in `args` (after an optional `--root DIR`).
fn run_modules(args: Vec<String>) -> ExitCode {
    let mut root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut crates = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--root" {
            let Some(dir) = args.next() else {
                eprintln!("xtask modules: `--root` needs a directory\n\n{USAGE}");
                return ExitCode::from(2);
            };
            root = PathBuf::from(dir);
        } else if let Some(dir) = arg.strip_prefix("--root=") {
            root = PathBuf::from(dir);
        } else if arg.starts_with('-') {
            eprintln!("xtask modules: unknown option `{arg}`\n\n{USAGE}");
            return ExitCode::from(2);
        } else {
            crates.push(arg);
        }
    }
    if crates.is_empty() {
        crates = modgraph::default_crates(&root);
    }
    let mut failed = false;
    for name in &crates {
        match modgraph::crate_graphs(&root, name) {
            Ok(graphs) => {
                for graph in graphs {
                    println!("{}", graph.report());
                }
            }
            Err(message) => {
                eprintln!("xtask modules: {message}");
                failed = true;
            }
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
