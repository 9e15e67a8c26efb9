//! The command notifier with real scripts in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ck_notify::DeliveryError;

use crate::support::{message, notifier};

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod the script");
    path
}

#[tokio::test]
async fn the_program_reads_the_envelope_and_sees_the_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(
        dir.path(),
        "notify.sh",
        "cat > \"$1\"\nprintf '%s|%s|%s|%s' \"$CERTKEEPER_EVENT\" \"$CERTKEEPER_DELIVERY_ID\" \"$CERTKEEPER_SUBJECT\" \
         \"${CARGO_MANIFEST_DIR:-withheld}\" > \"$2\"",
    );
    let (stdin_file, env_file) = (dir.path().join("stdin.json"), dir.path().join("env.txt"));
    let command = notifier(&format!(
        "type: command\nprogram: {}\nargs: [{}, {}]\n",
        program.display(),
        stdin_file.display(),
        env_file.display()
    ));
    assert_eq!(command.kind(), "command");
    let message = message();
    command.deliver(&message).await.expect("exit 0 is delivered");

    let stdin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stdin_file).expect("stdin copy")).expect("stdin is JSON");
    assert_eq!(stdin, message.envelope());
    // cargo sets CARGO_MANIFEST_DIR for this test process; the program must not inherit it.
    assert_eq!(
        std::fs::read_to_string(&env_file).expect("env copy"),
        format!("renewal_failed|{}|{}|withheld", message.id, message.subject)
    );
}

#[tokio::test]
async fn a_failing_program_is_transient_with_its_status_and_stderr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(
        dir.path(),
        "fail.sh",
        "echo 'starting' >&2\necho 'pager gateway: quota exceeded' >&2\nexit 3",
    );
    let error = notifier(&format!("type: command\nprogram: {}\n", program.display()))
        .deliver(&message())
        .await
        .expect_err("exit 3");
    let DeliveryError::Transient(text) = &error else {
        panic!("expected Transient, got {error:?}");
    };
    assert!(
        text.contains("exit status: 3") && text.ends_with("starting pager gateway: quota exceeded"),
        "{text}"
    );
}

#[tokio::test]
async fn stderr_is_cut_to_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(
        dir.path(),
        "chatty.sh",
        "i=0\nwhile [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done\nexit 1",
    );
    let error = notifier(&format!("type: command\nprogram: {}\n", program.display()))
        .deliver(&message())
        .await
        .expect_err("exit 1");
    let text = error.to_string();
    assert!(
        text.len() < 400 && text.ends_with("line 1999"),
        "{} bytes: {text}",
        text.len()
    );
}

#[tokio::test]
async fn a_program_that_ignores_stdin_is_fine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = script(dir.path(), "quiet.sh", "exit 0");
    notifier(&format!("type: command\nprogram: {}\n", program.display()))
        .deliver(&message())
        .await
        .expect("exit 0 without reading stdin");
}

#[tokio::test]
async fn a_slow_program_is_killed_at_the_timeout() {
    let started = Instant::now();
    let error = notifier("type: command\nprogram: /bin/sleep\nargs: ['5']\ntimeout_seconds: 1\n")
        .deliver(&message())
        .await
        .expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(
        error,
        DeliveryError::Transient("command: /bin/sleep did not finish within 1 s and was killed".to_owned())
    );
}

#[tokio::test]
async fn a_missing_or_unexecutable_program_is_permanent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-program");
    let error = notifier(&format!("type: command\nprogram: {}\n", missing.display()))
        .deliver(&message())
        .await
        .expect_err("missing");
    assert_eq!(
        error,
        DeliveryError::Permanent(format!("command: {} not found", missing.display()))
    );

    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "hello").expect("write");
    let error = notifier(&format!("type: command\nprogram: {}\n", not_executable.display()))
        .deliver(&message())
        .await
        .expect_err("not executable");
    assert!(matches!(error, DeliveryError::Permanent(_)), "{error:?}");
}
