//! The `exec` provider running real shell scripts written by each test: arguments and
//! environment, the SHA-256 pin, the timeout kill, and stderr in failure messages.

// Test helpers panic on purpose: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ck_dns::{DnsError, DnsProvider, DnsProviderConfig, ExecConfig, Secret};
use sha2::{Digest, Sha256};

const VALUE: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

/// Writes an executable `/bin/sh` script named `hook.sh` into `dir`.
fn write_script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("hook.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn exec_provider(command: &Path, sha256: Option<String>, timeout: u64) -> DnsProvider {
    DnsProviderConfig::Exec(ExecConfig {
        command: command.to_owned(),
        sha256,
        timeout,
        env: BTreeMap::from([("HOOK_TOKEN".to_owned(), Secret::new("token-from-env"))]),
    })
    .build()
    .unwrap()
}

#[tokio::test]
async fn present_and_cleanup_call_the_hook_like_lego() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls.log");
    let script = write_script(
        dir.path(),
        &format!("echo \"$# $1 $2 $3 $HOOK_TOKEN\" >> '{}'", calls.display()),
    );
    let dns = exec_provider(&script, None, 30);
    assert_eq!(dns.kind(), "exec");

    dns.present("_acme-challenge.www.example.test", VALUE).await.unwrap();
    dns.cleanup("_acme-challenge.www.example.test.", VALUE).await.unwrap();

    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log,
        format!(
            "3 present _acme-challenge.www.example.test. {VALUE} token-from-env\n\
             3 cleanup _acme-challenge.www.example.test. {VALUE} token-from-env\n"
        )
    );
}

#[tokio::test]
async fn a_pinned_checksum_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = write_script(dir.path(), &format!("touch '{}'", ran.display()));
    let actual = hex::encode(Sha256::digest(std::fs::read(&script).unwrap()));

    exec_provider(&script, Some(actual.to_uppercase()), 30)
        .present("_acme-challenge.example.test", VALUE)
        .await
        .unwrap();
    assert!(ran.exists());
    std::fs::remove_file(&ran).unwrap();

    let pinned = "0".repeat(64);
    let error = exec_provider(&script, Some(pinned.clone()), 30)
        .present("_acme-challenge.example.test", VALUE)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DnsError::ExecChecksumMismatch { .. }), "{message}");
    assert!(message.contains(&pinned) && message.contains(&actual), "{message}");
    assert!(!ran.exists(), "the hook ran despite the checksum mismatch");
}

#[tokio::test]
async fn a_hook_that_runs_too_long_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // exec keeps the PID, so the recorded PID is the process that must die.
    let script = write_script(
        dir.path(),
        &format!("echo $$ > '{}'\nexec sleep 30", pid_file.display()),
    );

    let started = Instant::now();
    let error = exec_provider(&script, None, 1)
        .present("_acme-challenge.example.test", VALUE)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, DnsError::ExecTimeout { .. }), "{error}");
    assert!(error.to_string().contains("was killed"), "{error}");

    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the hook (pid {pid}) is still running"
    );
}

#[tokio::test]
async fn a_failing_hook_shows_the_end_of_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "i=0\nwhile [ $i -lt 500 ]; do echo \"noise line $i\" >&2; i=$((i+1)); done\n\
         echo 'zone example.test is locked' >&2\nexit 3",
    );
    let error = exec_provider(&script, None, 30)
        .cleanup("_acme-challenge.example.test", VALUE)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DnsError::ExecFailed { .. }), "{message}");
    assert!(message.contains("cleanup failed (exit status: 3)"), "{message}");
    assert!(message.ends_with("zone example.test is locked"), "{message}");
    assert!(!message.contains("noise line 0\n"), "stderr is not bounded: {message}");
    assert!(message.len() < 3000, "{} bytes", message.len());
    assert!(!message.contains("token-from-env"), "{message}");
}

#[tokio::test]
async fn a_missing_hook_is_a_clear_error() {
    let error = exec_provider(Path::new("/nonexistent/ck-dns-hook"), None, 30)
        .present("_acme-challenge.example.test", VALUE)
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with("cannot run /nonexistent/ck-dns-hook"),
        "{error}"
    );
}

/// The hook starts from an empty environment: the configured names (the allowlist) and the
/// fixed `PATH`, nothing of the calling process's own (HOME, its credentials, CARGO_*…).
#[tokio::test]
async fn the_hook_gets_only_the_allowlisted_environment_and_a_fixed_path() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("env");
    let script = write_script(dir.path(), &format!("env > '{}'", seen.display()));
    exec_provider(&script, None, 30)
        .present("_acme-challenge.example.test", VALUE)
        .await
        .unwrap();
    let env = std::fs::read_to_string(&seen).unwrap();
    let names: Vec<&str> = env.lines().filter_map(|line| line.split('=').next()).collect();
    assert!(env.contains("HOOK_TOKEN=token-from-env"), "{env}");
    assert!(env.contains(&format!("PATH={}\n", ck_dns::HOOK_PATH)), "{env}");
    // /bin/sh itself adds PWD (and dash or bash may add SHLVL, `_`, OLDPWD).
    for name in names {
        assert!(
            ["HOOK_TOKEN", "PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "{name} reached the hook: {env}"
        );
    }
}
