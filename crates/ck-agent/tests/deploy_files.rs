//! Deployment core through the `files`, `apache`, `pkcs12` and `jks` targets: layouts, modes,
//! change detection, confinement, hook checks, rollback and crash recovery (real `kill -9`).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use ck_agent::{DeployError, Recovery, deploy, recover};
use common::{Pki, mode_of, script, target};

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("certs");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    Setup {
        root: root.canonicalize().unwrap(),
        state,
        _dir: dir,
    }
}

fn files_yaml(root: &Path, extra: &str) -> String {
    format!(
        "type: files\nname: web\ncert_path: {r}/cert.pem\nkey_path: {r}/key.pem\nchain_path: {r}/chain.pem\n\
         fullchain_path: {r}/fullchain.pem\ncombined_path: {r}/combined.pem\n{extra}",
        r = root.display()
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn files_target_writes_every_layout_with_modes() {
    let s = setup();
    let pki = Pki::new();
    let bundle = pki.leaf("www.example.test");
    let config = target(&files_yaml(&s.root, "mode: \"0640\"\nkey_mode: \"0400\"\n"));
    let report = deploy(&config, &bundle, std::slice::from_ref(&s.root), &s.state).unwrap();
    assert!(report.changed);
    assert_eq!(report.files.len(), 5);
    assert_eq!(report.verified, None);

    let leaf = bundle.leaf_pem().unwrap();
    let chain = bundle.intermediates_pem().unwrap();
    assert_eq!(read(&s.root.join("cert.pem")), leaf);
    assert_eq!(read(&s.root.join("chain.pem")), chain);
    assert_eq!(read(&s.root.join("fullchain.pem")), format!("{leaf}{chain}"));
    assert!(read(&s.root.join("combined.pem")).starts_with(&format!("{leaf}{chain}-----BEGIN PRIVATE KEY-----")));
    assert_eq!(
        read(&s.root.join("key.pem")).trim_end(),
        bundle.key_pem.expose().trim_end()
    );
    assert_eq!(mode_of(&s.root.join("cert.pem")), 0o640);
    assert_eq!(mode_of(&s.root.join("key.pem")), 0o400);
    assert_eq!(mode_of(&s.root.join("combined.pem")), 0o400);
    // No temp files or previous versions on a first deployment; no journal left behind.
    assert_eq!(
        dir_listing(&s.root),
        ["cert.pem", "chain.pem", "combined.pem", "fullchain.pem", "key.pem"]
    );
    assert_eq!(dir_listing(&s.state), ["web.lock", "web.state.json"]);
}

#[test]
fn key_mode_is_never_looser_than_0600() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    let config = target(&files_yaml(&s.root, "key_mode: \"0644\"\n"));
    deploy(&config, &bundle, std::slice::from_ref(&s.root), &s.state).unwrap();
    assert_eq!(mode_of(&s.root.join("key.pem")), 0o600);
    assert_eq!(mode_of(&s.root.join("combined.pem")), 0o600);
    assert_eq!(mode_of(&s.root.join("cert.pem")), 0o644);
}

#[test]
fn deploys_only_on_change_and_runs_post_hook_only_then() {
    let s = setup();
    let pki = Pki::new();
    let (first, second) = (pki.leaf("a.test"), pki.leaf("a.test"));
    let counter = s.root.join("post-hook.count");
    let hook = script(
        s.state.parent().unwrap(),
        "post.sh",
        &format!("echo ran >> {}", counter.display()),
    );
    let config = target(&files_yaml(
        &s.root,
        &format!("post_hook: {{ argv: [\"{}\"] }}\n", hook.display()),
    ));
    let roots = [s.root.clone()];

    assert!(deploy(&config, &first, &roots, &s.state).unwrap().changed);
    assert_eq!(read(&counter).lines().count(), 1);
    let again = deploy(&config, &first, &roots, &s.state).unwrap();
    assert!(!again.changed);
    assert!(again.written.is_empty());
    assert_eq!(
        read(&counter).lines().count(),
        1,
        "post hook must not run without a change"
    );

    let old_cert = read(&s.root.join("cert.pem"));
    let report = deploy(&config, &second, &roots, &s.state).unwrap();
    assert!(report.changed);
    assert_eq!(read(&counter).lines().count(), 2);
    assert_eq!(read(&s.root.join("cert.pem")), second.leaf_pem().unwrap());
    // The previous version is kept for rollback; the unchanged chain file was not rewritten.
    assert_eq!(read(&s.root.join("cert.pem.certkeeper-prev")), old_cert);
    assert!(!s.root.join("chain.pem.certkeeper-prev").exists());
    assert!(!report.written.contains(&s.root.join("chain.pem")));
}

#[test]
fn paths_outside_allowed_roots_are_refused_before_writing() {
    let s = setup();
    let outside = tempfile::tempdir().unwrap();
    let bundle = Pki::new().leaf("a.test");
    let roots = [s.root.clone()];
    let cases = [
        // Plainly elsewhere.
        format!("{}/cert.pem", outside.path().display()),
        // `..` escape.
        format!("{}/../escape.pem", s.root.display()),
        // Through a symlinked directory inside the root.
        format!("{}/link/cert.pem", s.root.display()),
    ];
    std::os::unix::fs::symlink(outside.path(), s.root.join("link")).unwrap();
    for cert_path in cases {
        let yaml = format!(
            "type: files\nname: t\ncert_path: {cert_path}\nkey_path: {}/key.pem\n",
            s.root.display()
        );
        let err = deploy(&target(&yaml), &bundle, &roots, &s.state).unwrap_err();
        assert!(
            matches!(err, DeployError::OutsideAllowedRoots { .. }),
            "{cert_path}: {err}"
        );
        assert_eq!(dir_listing(&s.root), ["link"], "{cert_path}: nothing may be written");
        assert!(dir_listing(outside.path()).is_empty());
    }
    // A symlinked file is refused too: the rename would replace the link.
    std::os::unix::fs::symlink(outside.path().join("x.pem"), s.root.join("cert.pem")).unwrap();
    let yaml = format!(
        "type: files\nname: t\ncert_path: {r}/cert.pem\nkey_path: {r}/key.pem\n",
        r = s.root.display()
    );
    let err = deploy(&target(&yaml), &bundle, &roots, &s.state).unwrap_err();
    assert!(matches!(err, DeployError::SymlinkRefused { .. }), "{err}");
    assert!(!s.root.join("key.pem").exists());
}

#[test]
fn missing_programs_are_refused_before_anything_runs_or_is_written() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    let marker = s.root.join("pre-hook-ran");
    let pre = script(
        s.state.parent().unwrap(),
        "pre.sh",
        &format!("touch {}", marker.display()),
    );
    for reload in ["/nonexistent/reload-it", "certkeeper-no-such-program"] {
        let extra = format!(
            "pre_hook: {{ argv: [\"{}\"] }}\nreload: {{ argv: [\"{reload}\", \"-x\"] }}\n",
            pre.display()
        );
        let err = deploy(
            &target(&files_yaml(&s.root, &extra)),
            &bundle,
            std::slice::from_ref(&s.root),
            &s.state,
        )
        .unwrap_err();
        assert!(
            matches!(&err, DeployError::HookNotFound { program } if program == reload),
            "{err}"
        );
        assert!(dir_listing(&s.root).is_empty(), "nothing written, pre-hook not run");
    }
}

#[test]
fn failed_validation_restores_previous_files_byte_identical() {
    let s = setup();
    let pki = Pki::new();
    let (first, second) = (pki.leaf("a.test"), pki.leaf("a.test"));
    let roots = [s.root.clone()];
    let base = format!(
        "type: files\nname: web\ncert_path: {r}/cert.pem\nkey_path: {r}/key.pem\n",
        r = s.root.display()
    );
    deploy(&target(&base), &first, &roots, &s.state).unwrap();
    let before: Vec<Vec<u8>> = ["cert.pem", "key.pem"]
        .iter()
        .map(|f| std::fs::read(s.root.join(f)).unwrap())
        .collect();

    let bad = script(
        s.state.parent().unwrap(),
        "validate.sh",
        "echo 'config test failed: bad key' >&2; exit 3",
    );
    let yaml = format!(
        "{base}fullchain_path: {}/fullchain.pem\nvalidate: {{ argv: [\"{}\"] }}\n",
        s.root.display(),
        bad.display()
    );
    let err = deploy(&target(&yaml), &second, &roots, &s.state).unwrap_err();
    match &err {
        DeployError::ValidationFailed { stderr, status, .. } => {
            assert_eq!(stderr, "config test failed: bad key");
            assert!(status.contains('3'), "{status}");
        }
        other => panic!("expected ValidationFailed, got {other}"),
    }
    let after: Vec<Vec<u8>> = ["cert.pem", "key.pem"]
        .iter()
        .map(|f| std::fs::read(s.root.join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
    // The file that did not exist before is gone again; no temp files, no journal.
    assert_eq!(dir_listing(&s.root), ["cert.pem", "key.pem"]);
    assert_eq!(dir_listing(&s.state), ["web.lock", "web.state.json"]);
    // The failed bundle is not recorded as deployed: a retry does the work again.
    let good = deploy(&target(&base), &second, &roots, &s.state).unwrap();
    assert!(good.changed);
}

#[test]
fn config_rejects_unknown_fields_and_debug_hides_keys() {
    let err = yaml_serde::from_str::<ck_agent::TargetConfig>(
        "type: nginx\nname: x\ncert_path: /a\nkey_path: /b\ncert_pth: /c\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("cert_pth"), "{err}");
    let err = yaml_serde::from_str::<ck_agent::TargetConfig>(
        "type: files\nname: x\ncert_path: /a\nkey_path: /b\nmode: 644x\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("octal"), "{err}");

    let bundle = Pki::new().leaf("a.test");
    let debug = format!("{bundle:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    let planned = target("type: files\nname: x\ncert_path: /a\nkey_path: /b\n")
        .target()
        .plan(&bundle);
    assert!(!format!("{planned:?}").contains("PRIVATE KEY"));
}

#[test]
fn apache_target_writes_separate_files() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    let yaml = format!(
        "type: apache\nname: httpd\ncert_path: {r}/c.pem\nkey_path: {r}/k.pem\nchain_path: {r}/chain.pem\n",
        r = s.root.display()
    );
    deploy(&target(&yaml), &bundle, std::slice::from_ref(&s.root), &s.state).unwrap();
    assert_eq!(read(&s.root.join("c.pem")), bundle.leaf_pem().unwrap());
    assert_eq!(read(&s.root.join("chain.pem")), bundle.intermediates_pem().unwrap());
    assert_eq!(mode_of(&s.root.join("k.pem")), 0o600);
}

fn openssl(args: &[&str]) -> std::process::Output {
    std::process::Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn pkcs12_target_is_readable_by_openssl() {
    let s = setup();
    let bundle = Pki::new().leaf("p12.test");
    let password = s.state.parent().unwrap().join("p12.pass");
    std::fs::write(&password, "s3cret-pass\n").unwrap();
    let yaml = format!(
        "type: pkcs12\nname: p12\npath: {}/store.p12\npassword_file: {}\n",
        s.root.display(),
        password.display()
    );
    deploy(&target(&yaml), &bundle, std::slice::from_ref(&s.root), &s.state).unwrap();
    let store = s.root.join("store.p12");
    assert_eq!(mode_of(&store), 0o600);
    let pass = format!("file:{}", password.display());
    let out = openssl(&["pkcs12", "-in", store.to_str().unwrap(), "-passin", &pass, "-nokeys"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let certs = pem::parse_many(text.as_bytes()).unwrap();
    let fingerprints: Vec<String> = certs.iter().map(|c| common::sha256_hex(c.contents())).collect();
    assert!(fingerprints.contains(&bundle.fingerprint), "leaf missing from {text}");
    assert_eq!(certs.len(), 2, "leaf and intermediate");
    let keys = openssl(&[
        "pkcs12",
        "-in",
        store.to_str().unwrap(),
        "-passin",
        &pass,
        "-nocerts",
        "-nodes",
    ]);
    assert!(String::from_utf8_lossy(&keys.stdout).contains("BEGIN PRIVATE KEY"));
    let wrong = openssl(&[
        "pkcs12",
        "-in",
        store.to_str().unwrap(),
        "-passin",
        "pass:wrong",
        "-nokeys",
    ]);
    assert!(!wrong.status.success());
}

#[test]
fn jks_target_is_readable_by_keytool() {
    let s = setup();
    let bundle = Pki::new().leaf("jks.test");
    let password = s.state.parent().unwrap().join("jks.pass");
    std::fs::write(&password, "changeit-123\n").unwrap();
    let yaml = format!(
        "type: jks\nname: java\npath: {}/store.jks\npassword_file: {}\nalias: tomcat\n",
        s.root.display(),
        password.display()
    );
    deploy(&target(&yaml), &bundle, std::slice::from_ref(&s.root), &s.state).unwrap();
    let store = s.root.join("store.jks");
    assert_eq!(mode_of(&store), 0o600);
    let Some(keytool) =
        ck_test_peers::peer_or_skip("keytool", "default-jre-headless", "jks_target_is_readable_by_keytool")
    else {
        return;
    };
    let out = std::process::Command::new(keytool)
        .args([
            "-list",
            "-v",
            "-keystore",
            store.to_str().unwrap(),
            "-storepass",
            "changeit-123",
            "-storetype",
            "JKS",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Alias name: tomcat"), "{text}");
    assert!(text.contains("PrivateKeyEntry"), "{text}");
    assert!(text.contains("Certificate chain length: 2"), "{text}");
    let colon_hex: String = bundle
        .fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    assert!(text.contains(&colon_hex), "leaf SHA-256 {colon_hex} not in {text}");
}

/// Environment variable telling the re-executed test binary to act as the deploying child.
const CHILD_ENV: &str = "CK_AGENT_KILL9_CHILD_DIR";

/// The child half of `kill_9_mid_deployment_is_recovered`: runs only when re-executed by it.
#[test]
fn kill9_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    let bundle = ck_agent::Bundle::from_pem(
        read(&dir.join("new-chain.pem")),
        ck_agent::SecretPem::new(read(&dir.join("new-key.pem"))),
    )
    .unwrap();
    let config = target(&files_yaml(&dir.join("certs"), ""));
    // Stalls inside (test hook) until the parent kills this process.
    let _ = deploy(&config, &bundle, &[dir.join("certs")], &dir.join("state"));
    unreachable!("the stall hook should have stopped the deployment");
}

#[test]
fn kill_9_mid_deployment_is_recovered() {
    let pki = Pki::new();
    let (first, second) = (pki.leaf("a.test"), pki.leaf("a.test"));
    // 0: before the first rename; 4: every file renamed, validation not yet run.
    for stall_after in [0, 1, 3, 4] {
        let s = setup();
        let dir = s.root.parent().unwrap().to_path_buf();
        let config = target(&files_yaml(&s.root, ""));
        deploy(&config, &first, std::slice::from_ref(&s.root), &s.state).unwrap();
        let snapshot =
            |names: &[&str]| -> Vec<Vec<u8>> { names.iter().map(|n| std::fs::read(s.root.join(n)).unwrap()).collect() };
        let names = ["cert.pem", "key.pem", "chain.pem", "fullchain.pem", "combined.pem"];
        let before = snapshot(&names);
        std::fs::write(dir.join("new-chain.pem"), &second.chain_pem).unwrap();
        std::fs::write(dir.join("new-key.pem"), second.key_pem.expose()).unwrap();

        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kill9_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &dir)
            .env("CERTKEEPER_AGENT_TEST_STALL_AFTER_RENAMES", stall_after.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("stalled after") {
                break;
            }
        }
        assert!(
            seen.contains("stalled after"),
            "child did not reach the stall point: {seen}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // The crash left the target mixed: some files new, some old (the chain is unchanged
        // between the two leaves, so it is not part of the deployment at all).
        let mixed = snapshot(&names);
        let changed = mixed.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert_eq!(changed, stall_after, "renames done before the kill");
        assert!(s.state.join("web.journal.json").exists());

        let recovery = recover(&config, &s.state).unwrap();
        assert!(
            matches!(&recovery, Recovery::RolledBack { fingerprint, restored } if *fingerprint == second.fingerprint && restored.len() == stall_after),
            "{recovery:?}"
        );
        assert_eq!(snapshot(&names), before, "every file back to the old version");
        assert!(!dir_listing(&s.root).iter().any(|n| n.ends_with(".certkeeper-tmp")));
        assert_eq!(recover(&config, &s.state).unwrap(), Recovery::Clean);

        // The interrupted bundle was never recorded, so the next deployment does the whole job.
        let report = deploy(&config, &second, std::slice::from_ref(&s.root), &s.state).unwrap();
        assert!(report.changed);
        assert_eq!(read(&s.root.join("cert.pem")), second.leaf_pem().unwrap());
    }
}

#[test]
fn failing_pre_hook_stops_before_writing() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    let pre = script(
        s.state.parent().unwrap(),
        "pre.sh",
        "echo 'maintenance window closed' >&2; exit 1",
    );
    let extra = format!("pre_hook: {{ argv: [\"{}\"] }}\n", pre.display());
    let err = deploy(
        &target(&files_yaml(&s.root, &extra)),
        &bundle,
        std::slice::from_ref(&s.root),
        &s.state,
    )
    .unwrap_err();
    assert!(
        matches!(&err, DeployError::PreHookFailed { stderr, .. } if stderr == "maintenance window closed"),
        "{err}"
    );
    assert!(dir_listing(&s.root).is_empty());
}

#[test]
fn slow_validation_is_killed_at_the_timeout_and_rolled_back() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    // The background `sleep` keeps stderr open after the script is killed: the run must not wait for it.
    let slow = script(
        s.state.parent().unwrap(),
        "slow.sh",
        "echo checking >&2; sleep 6 & sleep 6",
    );
    let extra = format!("validate: {{ argv: [\"{}\"] }}\ntimeout_seconds: 1\n", slow.display());
    let started = std::time::Instant::now();
    let err = deploy(
        &target(&files_yaml(&s.root, &extra)),
        &bundle,
        std::slice::from_ref(&s.root),
        &s.state,
    )
    .unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        DeployError::ValidationFailed { status, stderr, .. } => {
            assert!(status.contains("killed after"), "{status}");
            assert_eq!(stderr, "checking");
        }
        other => panic!("expected ValidationFailed, got {other}"),
    }
    assert!(
        dir_listing(&s.root).is_empty(),
        "files that did not exist before are removed again"
    );
}

#[test]
fn owner_and_group_are_applied() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("SKIPPED: owner_and_group_are_applied needs root to chown");
        return;
    }
    let config = target(&files_yaml(&s.root, "owner: \"65534\"\ngroup: root\n"));
    deploy(&config, &bundle, std::slice::from_ref(&s.root), &s.state).unwrap();
    let meta = std::fs::metadata(s.root.join("key.pem")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 0));
    let err = deploy(
        &target(&files_yaml(&s.root, "owner: no-such-user-certkeeper\n")),
        &Pki::new().leaf("b.test"),
        std::slice::from_ref(&s.root),
        &s.state,
    )
    .unwrap_err();
    assert!(matches!(err, DeployError::InvalidConfig { .. }), "{err}");
}

#[test]
fn haproxy_runtime_api_failure_is_reported() {
    let s = setup();
    let bundle = Pki::new().leaf("a.test");
    let yaml = format!(
        "type: haproxy\nname: lb\npem_path: {r}/site.pem\nruntime_api_socket: {r}/no-such.sock\n",
        r = s.root.display()
    );
    let err = deploy(&target(&yaml), &bundle, std::slice::from_ref(&s.root), &s.state).unwrap_err();
    assert!(matches!(err, DeployError::RuntimeApi { .. }), "{err}");
    // The validated file stays (it is what a reload would load); the bundle is not recorded, so a
    // retry pushes it again.
    assert!(s.root.join("site.pem").exists());
    assert!(deploy(&target(&yaml), &bundle, std::slice::from_ref(&s.root), &s.state).is_err());
}
