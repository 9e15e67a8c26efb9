//! The control plane of the `certkeeper` binary as a library: settings (`config`), the key
//! that seals the database's secrets (`secrets`) and the server itself (`serve`), for the
//! binary and for programs that run the very same server themselves (`ck-bench`, and a fuzz
//! target of the config).
//!
//! The CLI verbs and the agent stay in the binary (`main.rs`). Like the binary, this library
//! reports errors with `anyhow`: it is the program's edge, not a library of the workspace's
//! layers (those below it use `thiserror`).

#![warn(missing_docs)]

mod challenge_listeners;
pub mod config;
pub mod files;
pub mod secrets;
pub mod serve;
mod tls_listener;

/// Runs `main` on a multi-threaded runtime and turns its outcome into the exit code; an error
/// is printed as one line (`error: ` and its causes, no backtrace).
pub fn run_main(main: impl std::future::Future<Output = anyhow::Result<()>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
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
