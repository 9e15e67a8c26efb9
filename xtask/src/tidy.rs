//! Repository tidy checks, run as ordinary tests by `cargo test` (the
//! rust-analyzer `xtask/tidy` pattern).
//!
//! Each rule is a `check_*` function that takes the repository root and returns
//! its violations, every one naming the file and the fix. The `#[test]` of the
//! same name runs it on this repository and fails if anything is reported. The
//! `self_check` module runs every check on small fixture trees in the system
//! temporary directory to prove that each one notices a violation.
//!
//! Only `std::fs` is used to walk the tree; `toml` parses the manifests. The
//! module rules read the source through `modgraph.rs`, which the `modules`
//! task uses too.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::modgraph::{self, Kind, Token};

/// Where one crate of `crates/` sits in the architecture.
struct CrateRule {
    /// Folder name under `crates/`, which is also the package name.
    name: &'static str,
    /// Internal crates it may list under `[dependencies]`.
    internal: &'static [&'static str],
    /// External crate families it must not list under `[dependencies]` or
    /// `[build-dependencies]`. A family is the crate plus every crate named
    /// `<family>-*` or `<family>_*` (`serde` also covers `serde_json`).
    forbidden: &'static [&'static str],
}

/// The dependency direction of the workspace. Keep in step with ARCHITECTURE.md.
const DEPENDENCY_TABLE: &[CrateRule] = &[
    CrateRule {
        name: "ck-domain",
        internal: &[],
        forbidden: &[
            "tokio",
            "sqlx",
            "axum",
            "reqwest",
            "hyper",
            "rcgen",
            "x509-parser",
            "aws-lc-rs",
            // Domain types are not wire types.
            "serde",
        ],
    },
    CrateRule {
        name: "ck-pki",
        internal: &["ck-domain"],
        forbidden: &["tokio", "sqlx", "axum", "reqwest", "hyper"],
    },
    CrateRule {
        name: "ck-secrets",
        internal: &[],
        forbidden: &["tokio", "sqlx", "axum", "reqwest", "hyper", "serde"],
    },
    CrateRule {
        name: "ck-store",
        internal: &["ck-domain", "ck-secrets"],
        forbidden: &["axum", "reqwest", "hyper", "rcgen", "x509-parser"],
    },
    CrateRule {
        name: "ck-api-types",
        internal: &[],
        forbidden: &["sqlx", "axum", "tokio"],
    },
    CrateRule {
        name: "ck-dns",
        internal: &[],
        forbidden: &["sqlx", "axum", "rcgen"],
    },
    CrateRule {
        name: "ck-acme",
        internal: &["ck-domain", "ck-dns"],
        forbidden: &["sqlx", "axum", "reqwest"],
    },
    CrateRule {
        name: "certkeeper-tls",
        internal: &["ck-acme", "ck-client", "ck-domain", "ck-pki", "ck-test-peers"],
        forbidden: &["sqlx", "axum"],
    },
    CrateRule {
        name: "ck-agent",
        internal: &["ck-domain", "ck-pki", "ck-api-types", "ck-client", "ck-test-peers"],
        forbidden: &["sqlx", "axum"],
    },
    CrateRule {
        name: "ck-test-peers",
        internal: &[],
        forbidden: &["sqlx", "axum"],
    },
    CrateRule {
        name: "ck-notify",
        internal: &["ck-domain", "ck-test-peers"],
        forbidden: &["sqlx", "axum", "rcgen"],
    },
    CrateRule {
        name: "ck-server",
        internal: &["ck-domain", "ck-pki", "ck-store", "ck-acme", "ck-dns", "ck-notify"],
        forbidden: &["axum", "reqwest"],
    },
    CrateRule {
        name: "ck-web",
        internal: &["ck-domain", "ck-server", "ck-store"],
        forbidden: &["sqlx", "reqwest"],
    },
    CrateRule {
        name: "ck-api",
        internal: &["ck-domain", "ck-api-types", "ck-server", "ck-store", "ck-acme"],
        forbidden: &["sqlx", "reqwest"],
    },
    CrateRule {
        name: "ck-client",
        internal: &["ck-api-types"],
        forbidden: &["sqlx", "axum"],
    },
    CrateRule {
        name: "certkeeper",
        internal: &[
            "ck-secrets",
            "ck-domain",
            "ck-pki",
            "ck-store",
            "ck-api-types",
            "ck-server",
            "ck-api",
            "ck-client",
            "ck-acme",
            "ck-dns",
            "ck-notify",
            "ck-web",
            "ck-test-peers",
            "certkeeper-tls",
            "ck-agent",
        ],
        forbidden: &[],
    },
    CrateRule {
        // The benchmarks: a leaf beside the binary (nothing depends on it), driving the
        // binary's library and the crates below it.
        name: "ck-bench",
        internal: &[
            "certkeeper",
            "ck-secrets",
            "ck-domain",
            "ck-pki",
            "ck-store",
            "ck-api-types",
            "ck-server",
            "ck-client",
            "ck-notify",
            "ck-web",
        ],
        forbidden: &[],
    },
];

/// External crate families that only the listed crates may have under
/// `[dependencies]` (directly; transitive use is fine).
const EXCLUSIVE_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("sqlx", &["ck-store"]),
    ("axum", &["ck-api", "ck-web", "certkeeper", "ck-bench"]),
];

/// Lines of README.md that must show how to run and test the project.
const README_HEAD_LINES: usize = 15;
const README_RUN_COMMAND: &str = "cargo run --release -- serve";
const TEST_SCRIPT: &str = "scripts/test.sh";

/// Extensions of the text files whose lines must not end in whitespace.
const WHITESPACE_CHECKED_EXTENSIONS: &[&str] = &["rs", "toml", "md", "sh", "sql"];

/// Directories skipped at any depth when walking the repository.
const SKIPPED_DIRS: &[&str] = &[".git", "target"];

/// The crate whose service types `services_keep_their_fields` checks.
const SERVICE_CRATE: &str = "ck-server";

/// ck-server's services: each owns its state, and other modules go through its methods, so
/// their fields (and those of any `<Service>State` / `<Service>Inner`) are private. A name that
/// does not exist (yet) is simply not found.
const SERVICE_TYPES: &[&str] = &[
    "ControlPlane",
    "Certificates",
    "Issuers",
    "Access",
    "Agents",
    "Pki",
    "Est",
    "Scep",
    "Notifications",
    "Monitoring",
    "Cluster",
];

/// The service type whose fields are public on purpose: it is the composition of the public
/// services, which callers reach through it (its `State`/`Inner`, if any, are still checked).
const PUBLIC_FIELDS_SERVICE: &str = "ControlPlane";

// ---------------------------------------------------------------------------
// The tests run on this repository.
// ---------------------------------------------------------------------------

#[test]
fn dependency_direction() {
    assert_clean("dependency_direction", check_dependency_direction(&repo_root()));
}

#[test]
fn architecture_mentions_every_crate() {
    assert_clean(
        "architecture_mentions_every_crate",
        check_architecture_mentions_every_crate(&repo_root()),
    );
}

#[test]
fn every_module_has_docs() {
    assert_clean("every_module_has_docs", check_every_module_has_docs(&repo_root()));
}

#[test]
fn no_ignore_or_should_panic() {
    assert_clean(
        "no_ignore_or_should_panic",
        check_no_ignore_or_should_panic(&repo_root()),
    );
}

#[test]
fn no_trailing_whitespace() {
    assert_clean("no_trailing_whitespace", check_no_trailing_whitespace(&repo_root()));
}

#[test]
fn migration_parity() {
    assert_clean("migration_parity", check_migration_parity(&repo_root()));
}

#[test]
fn readme_first_lines() {
    assert_clean("readme_first_lines", check_readme_first_lines(&repo_root()));
}

#[test]
fn no_module_import_cycles() {
    assert_clean("no_module_import_cycles", check_no_module_import_cycles(&repo_root()));
}

#[test]
fn services_keep_their_fields() {
    assert_clean(
        "services_keep_their_fields",
        check_services_keep_their_fields(&repo_root()),
    );
}

fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask/ has a parent directory: the repository root")
        .to_path_buf()
}

fn assert_clean(check: &str, violations: Vec<String>) {
    assert!(
        violations.is_empty(),
        "tidy check `{check}` found {} problem(s) (rules in xtask/src/tidy.rs):\n  - {}\n",
        violations.len(),
        violations.join("\n  - "),
    );
}

// ---------------------------------------------------------------------------
// 1. dependency_direction
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum DepKind {
    Normal,
    Build,
    Dev,
}

/// One dependency as written in a manifest.
struct Dep {
    /// The real package name (after `package = "..."` renames).
    name: String,
    /// The section it was found in, for messages, e.g. `[dependencies]`.
    section: String,
    kind: DepKind,
    /// Whether it is a `path` dependency (directly or via the workspace).
    is_path: bool,
}

fn check_dependency_direction(root: &Path) -> Vec<String> {
    let mut violations = Vec::new();

    for rule in DEPENDENCY_TABLE {
        for internal in rule.internal {
            if !DEPENDENCY_TABLE.iter().any(|r| r.name == *internal) {
                violations.push(format!(
                    "xtask/src/tidy.rs: DEPENDENCY_TABLE lets {} depend on `{internal}`, which is \
                     not a crate of the table: fix the typo or add a row for it",
                    rule.name
                ));
            }
        }
    }

    let workspace_deps = match read_manifest(&root.join("Cargo.toml")) {
        Ok(manifest) => manifest
            .get("workspace")
            .and_then(|w| w.get("dependencies"))
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default(),
        Err(message) => {
            violations.push(message);
            toml::Table::new()
        }
    };

    let folders = match crate_folders(root) {
        Ok(folders) => folders,
        Err(message) => {
            violations.push(message);
            return violations;
        }
    };

    let internal_names: BTreeSet<&str> = DEPENDENCY_TABLE
        .iter()
        .map(|r| r.name)
        .chain(folders.iter().map(String::as_str))
        .collect();

    for rule in DEPENDENCY_TABLE {
        if !folders.iter().any(|f| f == rule.name) {
            violations.push(format!(
                "xtask/src/tidy.rs: DEPENDENCY_TABLE has a row for {0} but crates/{0}/ does not \
                 exist: remove the row (and the crate from ARCHITECTURE.md) or restore the crate",
                rule.name
            ));
        }
    }

    for folder in &folders {
        let Some(rule) = DEPENDENCY_TABLE.iter().find(|r| r.name == folder.as_str()) else {
            violations.push(format!(
                "crates/{folder}/ is not in the dependency table: add it to DEPENDENCY_TABLE in \
                 xtask/src/tidy.rs (which internal crates it may use, which external crates it \
                 must not) and to ARCHITECTURE.md"
            ));
            continue;
        };
        let manifest_rel = format!("crates/{folder}/Cargo.toml");
        let manifest = match read_manifest(&root.join(&manifest_rel)) {
            Ok(manifest) => manifest,
            Err(message) => {
                violations.push(message);
                continue;
            }
        };

        let package_name = manifest
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str);
        if package_name != Some(folder.as_str()) {
            violations.push(format!(
                "{manifest_rel}: package.name is {package_name:?} but the folder is crates/{folder}: \
                 the folder name must be the package name (rename one of them)"
            ));
        }

        for dep in manifest_deps(&manifest, &workspace_deps) {
            let name = dep.name.as_str();
            let section = &dep.section;
            let is_internal = dep.is_path || internal_names.contains(name);

            if dep.kind == DepKind::Normal && is_internal && !rule.internal.contains(&name) {
                let allowed = if rule.internal.is_empty() {
                    "no internal crate".to_string()
                } else {
                    rule.internal.join(", ")
                };
                violations.push(format!(
                    "{manifest_rel}: {section} `{name}` is an internal crate, but {folder} may \
                     only depend on: {allowed}. Remove the dependency (move the code to a crate \
                     below), or if the architecture really changed, update DEPENDENCY_TABLE in \
                     xtask/src/tidy.rs and ARCHITECTURE.md"
                ));
                continue;
            }

            if matches!(dep.kind, DepKind::Normal | DepKind::Build)
                && let Some(family) = rule.forbidden.iter().find(|f| in_family(name, f))
            {
                violations.push(format!(
                    "{manifest_rel}: {section} `{name}`: {folder} must not depend on \
                     `{family}` (forbidden list: {}). Remove the dependency and keep that \
                     concern in the crate that owns it (see ARCHITECTURE.md)",
                    rule.forbidden.join(", ")
                ));
                continue;
            }

            if dep.kind == DepKind::Normal {
                for (family, owners) in EXCLUSIVE_DEPENDENCIES {
                    if in_family(name, family) && !owners.contains(&folder.as_str()) {
                        violations.push(format!(
                            "{manifest_rel}: {section} `{name}`: only {} may depend on \
                             `{family}` directly. Remove it and go through those crates' APIs",
                            owners.join(" and ")
                        ));
                    }
                }
            }
        }
    }
    violations
}

/// Whether `dep` is `family` or a crate of that family (`family-*`, `family_*`).
fn in_family(dep: &str, family: &str) -> bool {
    dep == family
        || dep
            .strip_prefix(family)
            .is_some_and(|rest| rest.starts_with(['-', '_']))
}

/// The folder names under `crates/`, sorted.
fn crate_folders(root: &Path) -> Result<Vec<String>, String> {
    let crates = root.join("crates");
    let entries = fs::read_dir(&crates).map_err(|err| format!("crates/: cannot list the crate folders ({err})"))?;
    let mut folders = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| format!("crates/: cannot list an entry ({err})"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            folders.push(name);
        }
    }
    folders.sort();
    Ok(folders)
}

fn read_manifest(path: &Path) -> Result<toml::Table, String> {
    let text =
        fs::read_to_string(path).map_err(|err| format!("{}: cannot read the manifest ({err})", path.display()))?;
    text.parse::<toml::Table>().map_err(|err| {
        format!(
            "{}: not valid TOML, fix the syntax: {}",
            path.display(),
            err.to_string().trim()
        )
    })
}

/// Every dependency of a manifest, including `[target.'cfg(..)'.*]` tables.
fn manifest_deps(manifest: &toml::Table, workspace_deps: &toml::Table) -> Vec<Dep> {
    const SECTIONS: &[(&str, DepKind)] = &[
        ("dependencies", DepKind::Normal),
        ("build-dependencies", DepKind::Build),
        ("build_dependencies", DepKind::Build),
        ("dev-dependencies", DepKind::Dev),
        ("dev_dependencies", DepKind::Dev),
    ];
    let mut deps = Vec::new();
    let mut collect = |table: &toml::Table, prefix: &str| {
        for (section, kind) in SECTIONS {
            let Some(entries) = table.get(*section).and_then(toml::Value::as_table) else {
                continue;
            };
            for (key, value) in entries {
                deps.push(resolve_dep(
                    key,
                    value,
                    workspace_deps,
                    format!("[{prefix}{section}]"),
                    *kind,
                ));
            }
        }
    };
    collect(manifest, "");
    if let Some(targets) = manifest.get("target").and_then(toml::Value::as_table) {
        for (cfg, table) in targets {
            if let Some(table) = table.as_table() {
                collect(table, &format!("target.'{cfg}'."));
            }
        }
    }
    deps
}

fn resolve_dep(key: &str, value: &toml::Value, workspace_deps: &toml::Table, section: String, kind: DepKind) -> Dep {
    let local = value.as_table();
    let inherits = local
        .and_then(|t| t.get("workspace"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false);
    let workspace = if inherits {
        workspace_deps.get(key).and_then(toml::Value::as_table)
    } else {
        None
    };
    let lookup = |field: &str| {
        local
            .and_then(|t| t.get(field))
            .or_else(|| workspace.and_then(|t| t.get(field)))
    };
    let name = lookup("package")
        .and_then(toml::Value::as_str)
        .unwrap_or(key)
        .to_string();
    let is_path = lookup("path").is_some();
    Dep {
        name,
        section,
        kind,
        is_path,
    }
}

// ---------------------------------------------------------------------------
// 2. architecture_mentions_every_crate
// ---------------------------------------------------------------------------

fn check_architecture_mentions_every_crate(root: &Path) -> Vec<String> {
    let folders = match crate_folders(root) {
        Ok(folders) => folders,
        Err(message) => return vec![message],
    };
    let Ok(text) = fs::read_to_string(root.join("ARCHITECTURE.md")) else {
        return vec![format!(
            "ARCHITECTURE.md is missing at the repository root: create it and describe every \
             crate of crates/ ({}): what it owns and what it may depend on",
            folders.join(", ")
        )];
    };
    folders
        .iter()
        .filter(|folder| !mentions_word(&text, folder))
        .map(|folder| {
            format!(
                "ARCHITECTURE.md does not mention crates/{folder}: add a line naming `{folder}`, \
                 what it owns and which crates it may depend on"
            )
        })
        .collect()
}

/// Whether `word` occurs in `text` as a whole crate name (so `ck-api-types`
/// does not count as a mention of `ck-api`).
fn mentions_word(text: &str, word: &str) -> bool {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(start, _)| {
        let before = text[..start].chars().next_back();
        let after = text[start + word.len()..].chars().next();
        !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
    })
}

// ---------------------------------------------------------------------------
// 3. every_module_has_docs
// ---------------------------------------------------------------------------

fn check_every_module_has_docs(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let folders = crate_folders(root).unwrap_or_default();
    for folder in &folders {
        let crate_dir = root.join("crates").join(folder);
        for sub in ["src", "tests", "benches", "examples"] {
            files.extend(rust_files(&crate_dir.join(sub)));
        }
        let build_script = crate_dir.join("build.rs");
        if build_script.is_file() {
            files.push(build_script);
        }
    }
    files.extend(rust_files(&root.join("xtask").join("src")));
    files.sort();

    let mut violations = Vec::new();
    for file in files {
        let rel = rel(root, &file);
        let text = match read_text(&file) {
            Ok(text) => text,
            Err(message) => {
                violations.push(message);
                continue;
            }
        };
        let first = text.lines().find(|line| !line.trim().is_empty());
        if !first.is_some_and(|line| line.trim_start().starts_with("//!")) {
            violations.push(format!(
                "{rel}: does not start with a `//!` module doc comment: add one as the first \
                 line, saying what the module is for"
            ));
        }
    }
    violations
}

// ---------------------------------------------------------------------------
// 4. no_ignore_or_should_panic
// ---------------------------------------------------------------------------

fn check_no_ignore_or_should_panic(root: &Path) -> Vec<String> {
    // Built with concat! so that this file does not contain the needles.
    let needles: [(&str, &str); 2] = [
        (
            concat!("#[", "ignore"),
            "peer tests fail clearly and are never silently skipped: remove the attribute and \
             make the test runnable (or delete it)",
        ),
        (
            concat!("#[", "should_panic"),
            "do not rely on a panic: remove the attribute and assert on the `Err` instead",
        ),
    ];
    let mut violations = Vec::new();
    for file in rust_files(&root.join("crates")) {
        let rel = rel(root, &file);
        let text = match read_text(&file) {
            Ok(text) => text,
            Err(message) => {
                violations.push(message);
                continue;
            }
        };
        for (index, line) in text.lines().enumerate() {
            for (needle, fix) in needles {
                if line.contains(needle) {
                    violations.push(format!("{rel}:{}: `{needle}]`: {fix}", index + 1));
                }
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------
// 5. no_trailing_whitespace
// ---------------------------------------------------------------------------

fn check_no_trailing_whitespace(root: &Path) -> Vec<String> {
    let ignored = root_ignored_paths(root);
    let mut files = Vec::new();
    walk(root, &ignored, &mut files);
    files.retain(|file| {
        file.extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| WHITESPACE_CHECKED_EXTENSIONS.contains(&ext))
    });

    let mut violations = Vec::new();
    for file in files {
        let rel = rel(root, &file);
        let text = match read_text(&file) {
            Ok(text) => text,
            Err(message) => {
                violations.push(message);
                continue;
            }
        };
        let hint = if rel.ends_with(".md") {
            " (for a Markdown line break, use a blank line or a trailing `\\`)"
        } else {
            ""
        };
        for (index, line) in text.lines().enumerate() {
            if line.ends_with([' ', '\t']) {
                violations.push(format!(
                    "{rel}:{}: trailing whitespace: delete the spaces/tabs at the end of the \
                     line{hint}",
                    index + 1
                ));
            }
        }
    }
    violations
}

/// Root-anchored plain entries of `.gitignore` (`/certkeeper-data`), which are
/// not tracked and so not checked.
fn root_ignored_paths(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string(root.join(".gitignore")) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix('/'))
        .map(|line| line.trim_end_matches('/'))
        .filter(|line| !line.is_empty() && !line.contains(['*', '?', '[', '!']))
        .map(|line| root.join(line))
        .collect()
}

// ---------------------------------------------------------------------------
// 6. migration_parity
// ---------------------------------------------------------------------------

fn check_migration_parity(root: &Path) -> Vec<String> {
    let sqlite_rel = "crates/ck-store/migrations/sqlite";
    let postgres_rel = "crates/ck-store/migrations/postgres";
    let sqlite = root.join(sqlite_rel);
    let postgres = root.join(postgres_rel);
    match (sqlite.is_dir(), postgres.is_dir()) {
        (false, false) => return Vec::new(),
        (true, false) => {
            return vec![format!(
                "{sqlite_rel}/ exists but {postgres_rel}/ does not: every migration needs a \
                 PostgreSQL twin; create {postgres_rel}/ with the same file names"
            )];
        }
        (false, true) => {
            return vec![format!(
                "{postgres_rel}/ exists but {sqlite_rel}/ does not: every migration needs a \
                 SQLite twin; create {sqlite_rel}/ with the same file names"
            )];
        }
        (true, true) => {}
    }
    let (sqlite_names, postgres_names) = match (dir_names(&sqlite), dir_names(&postgres)) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(message), _) | (_, Err(message)) => return vec![message],
    };
    let mut violations = Vec::new();
    for name in sqlite_names.difference(&postgres_names) {
        violations.push(format!(
            "{sqlite_rel}/{name} has no twin {postgres_rel}/{name}: add the PostgreSQL version \
             under the same file name (or rename it to match its twin)"
        ));
    }
    for name in postgres_names.difference(&sqlite_names) {
        violations.push(format!(
            "{postgres_rel}/{name} has no twin {sqlite_rel}/{name}: add the SQLite version \
             under the same file name (or rename it to match its twin)"
        ));
    }
    violations
}

/// Names of the entries of `dir`, without hidden ones (`.gitkeep`).
fn dir_names(dir: &Path) -> Result<BTreeSet<String>, String> {
    let entries = fs::read_dir(dir).map_err(|err| format!("{}: cannot list ({err})", dir.display()))?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|err| format!("{}: cannot list ({err})", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            names.insert(name);
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------------------
// 7. readme_first_lines
// ---------------------------------------------------------------------------

fn check_readme_first_lines(root: &Path) -> Vec<String> {
    let mut violations = Vec::new();
    match fs::read_to_string(root.join("README.md")) {
        Err(_) => violations.push(format!(
            "README.md is missing at the repository root: create it; its first \
             {README_HEAD_LINES} lines must show `{README_RUN_COMMAND}` and `{TEST_SCRIPT}`"
        )),
        Ok(text) => {
            let head: Vec<&str> = text.lines().take(README_HEAD_LINES).collect();
            let head = head.join("\n");
            for (command, what) in [
                (README_RUN_COMMAND, "how to run the server"),
                (TEST_SCRIPT, "how to run the tests"),
            ] {
                if !head.contains(command) {
                    violations.push(format!(
                        "README.md: the first {README_HEAD_LINES} lines must show {what}: add \
                         `{command}` near the top"
                    ));
                }
            }
        }
    }
    match fs::read_to_string(root.join(".ci").join("run")) {
        Err(_) => violations.push(format!(".ci/run is missing: create it and make it run `{TEST_SCRIPT}`")),
        Ok(text) => {
            if !text.contains(TEST_SCRIPT) {
                violations.push(format!(
                    ".ci/run does not run `{TEST_SCRIPT}`: CI must run the same tests as \
                     developers; call `{TEST_SCRIPT}` from it"
                ));
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------
// 8. no_module_import_cycles
// ---------------------------------------------------------------------------

fn check_no_module_import_cycles(root: &Path) -> Vec<String> {
    let mut violations = Vec::new();
    for krate in modgraph::default_crates(root) {
        let graphs = match modgraph::crate_graphs(root, &krate) {
            Ok(graphs) => graphs,
            Err(message) => {
                violations.push(message);
                continue;
            }
        };
        for graph in graphs {
            for cycle in graph.cycles() {
                let path: Vec<String> = cycle
                    .path
                    .iter()
                    .map(|(from, to, sites)| format!("{from} -> {to} ({})", modgraph::describe_sites(sites)))
                    .collect();
                violations.push(format!(
                    "{krate} ({}): modules {} import each other in a cycle: {}; move what they \
                     share into a leaf module (or into the module that is used) so that the \
                     imports point one way (`cargo run -p xtask -- modules {krate}` shows the graph)",
                    graph.kind,
                    cycle.modules.join(", "),
                    path.join(", "),
                ));
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------
// 9. services_keep_their_fields
// ---------------------------------------------------------------------------

fn check_services_keep_their_fields(root: &Path) -> Vec<String> {
    if modgraph::crate_dir(root, SERVICE_CRATE).is_none() {
        return Vec::new();
    }
    let graphs = match modgraph::crate_graphs(root, SERVICE_CRATE) {
        Ok(graphs) => graphs,
        Err(message) => return vec![message],
    };
    // Every file of every root once (inline modules share their file).
    let files: BTreeSet<String> = graphs.iter().flat_map(|g| g.modules.values().cloned()).collect();
    let mut violations = Vec::new();
    for file in files {
        let text = match read_text(&root.join(&file)) {
            Ok(text) => text,
            Err(message) => {
                violations.push(message);
                continue;
            }
        };
        for field in public_service_fields(&modgraph::tokens(&text)) {
            violations.push(format!(
                "{file}:{}: field `{}` of `{}` is `{}`: service types keep their fields private \
                 (SERVICE_TYPES in xtask/src/tidy.rs); make it private and give `{}` a method \
                 that does what the other module needs",
                field.line, field.name, field.owner, field.visibility, field.owner,
            ));
        }
    }
    violations
}

/// Whether `name` is a struct whose fields must be private: a service type other than
/// `ControlPlane`, or any service's `<Service>State` / `<Service>Inner`.
fn is_checked_service_struct(name: &str) -> bool {
    SERVICE_TYPES.iter().any(|service| {
        (name == *service && name != PUBLIC_FIELDS_SERVICE)
            || name
                .strip_prefix(service)
                .is_some_and(|rest| rest == "State" || rest == "Inner")
    })
}

/// A `pub` field of a checked struct.
#[derive(Debug, PartialEq)]
struct PublicField {
    owner: String,
    /// The field's name, or its index in a tuple struct.
    name: String,
    /// `pub`, `pub(crate)`, `pub(super)`, ...
    visibility: String,
    line: usize,
}

/// The `pub` fields (of any restriction) of the checked structs declared in `tokens`.
fn public_service_fields(tokens: &[Token]) -> Vec<PublicField> {
    let mut out = Vec::new();
    for (at, token) in tokens.iter().enumerate() {
        if !matches!(&token.kind, Kind::Ident(word) if word == "struct") {
            continue;
        }
        let Some(Kind::Ident(owner)) = tokens.get(at + 1).map(|t| &t.kind) else {
            continue;
        };
        if !is_checked_service_struct(owner) {
            continue;
        }
        let Some((open, tuple)) = struct_body(tokens, at + 2) else {
            continue;
        };
        for (index, field) in fields(tokens, open).into_iter().enumerate() {
            // Skip `#[...]` attributes in front of the field.
            let mut start = 0;
            while modgraph::is_punct(field.get(start), '#') {
                start = skip_group(field, start + 1);
            }
            if !modgraph::is_ident(field.get(start), "pub") {
                continue;
            }
            let mut after = start + 1;
            let mut visibility = "pub".to_owned();
            if modgraph::is_punct(field.get(after), '(') {
                let end = skip_group(field, after);
                let inner: Vec<String> = field[after + 1..end.saturating_sub(1)].iter().map(token_text).collect();
                visibility = format!("pub({})", inner.join(" ").replace(" :: ", "::"));
                after = end;
            }
            let name = if tuple {
                index.to_string()
            } else {
                match field.get(after).map(|t| &t.kind) {
                    Some(Kind::Ident(name)) => name.clone(),
                    _ => continue,
                }
            };
            out.push(PublicField {
                owner: owner.clone(),
                name,
                visibility,
                line: field[start].line,
            });
        }
    }
    out
}

/// After a struct's name: the index of the `{` or `(` that opens its fields and whether it is
/// a tuple struct; `None` for a unit struct. Generics and a `where` clause are stepped over.
fn struct_body(tokens: &[Token], mut at: usize) -> Option<(usize, bool)> {
    let mut angle = 0usize;
    let mut seen_where = false;
    while let Some(token) = tokens.get(at) {
        match &token.kind {
            Kind::Punct('<') => angle += 1,
            // `->` in a `Fn(A) -> B` bound is not a closing bracket.
            Kind::Punct('>') if !modgraph::is_punct(at.checked_sub(1).and_then(|p| tokens.get(p)), '-') => {
                angle = angle.saturating_sub(1);
            }
            Kind::Ident(word) if word == "where" && angle == 0 => seen_where = true,
            Kind::Punct('{') if angle == 0 => return Some((at, false)),
            Kind::Punct('(') if angle == 0 && !seen_where => return Some((at, true)),
            Kind::Punct(';') if angle == 0 => return None,
            _ => {}
        }
        at += 1;
    }
    None
}

/// The fields between the bracket at `open` and its partner, split at top-level commas.
fn fields(tokens: &[Token], open: usize) -> Vec<&[Token]> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    let mut at = open + 1;
    while let Some(token) = tokens.get(at) {
        match &token.kind {
            Kind::Punct('(' | '[' | '{' | '<') => depth += 1,
            Kind::Punct('>') if modgraph::is_punct(at.checked_sub(1).and_then(|p| tokens.get(p)), '-') => {}
            Kind::Punct(')' | ']' | '}' | '>') => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Kind::Punct(',') if depth == 0 => {
                out.push(&tokens[start..at]);
                start = at + 1;
            }
            _ => {}
        }
        at += 1;
    }
    if start < at {
        out.push(&tokens[start..at.min(tokens.len())]);
    }
    out.retain(|field| !field.is_empty());
    out
}

/// The index after the bracket group that opens at `open` (`(...)`, `[...]`).
fn skip_group(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    let mut at = open;
    while let Some(token) = tokens.get(at) {
        match token.kind {
            Kind::Punct('(' | '[' | '{') => depth += 1,
            Kind::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return at + 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    at
}

fn token_text(token: &Token) -> String {
    match &token.kind {
        Kind::Ident(word) => word.clone(),
        Kind::Sep => "::".to_owned(),
        Kind::Punct(c) => c.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Walking helpers (std::fs only).
// ---------------------------------------------------------------------------

/// All files under `dir` (recursively), skipping `.git/`, `target/` and the
/// paths in `ignored`. A missing `dir` yields nothing.
fn walk(dir: &Path, ignored: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
    paths.sort();
    for path in paths {
        if ignored.contains(&path) {
            continue;
        }
        // `symlink_metadata` so that a symlinked directory is not followed.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| SKIPPED_DIRS.contains(&n.as_str())) {
                continue;
            }
            walk(&path, ignored, out);
        } else if meta.is_file() {
            out.push(path);
        }
    }
}

/// The `.rs` files under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(dir, &[], &mut files);
    files.retain(|file| file.extension().is_some_and(|ext| ext == "rs"));
    files
}

fn read_text(path: &Path) -> Result<String, String> {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|err| format!("{}: cannot read ({err})", path.display()))
}

/// `path` relative to the repository root, with `/` separators, for messages.
fn rel(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------
// Self-checks: every check flags a violation in a fixture tree.
// ---------------------------------------------------------------------------

mod self_check {
    //! Builds a small clean repository in the system temporary directory, breaks
    //! one rule at a time and asserts that the matching check reports it.

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A throwaway repository tree, deleted on drop.
    struct Fixture {
        root: PathBuf,
    }

    impl Fixture {
        /// A tree that passes every check.
        fn clean() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "certkeeper-xtask-tidy-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            let fixture = Self { root };

            let mut workspace = String::from("[workspace.dependencies]\n");
            for rule in DEPENDENCY_TABLE {
                workspace.push_str(&format!("{0} = {{ path = \"crates/{0}\" }}\n", rule.name));
            }
            workspace.push_str("tokio = \"1\"\nsqlx = \"0.9\"\naxum = \"0.8\"\nserde = \"1\"\n");
            fixture.write("Cargo.toml", &workspace);
            fixture.write(".gitignore", "/target\n/certkeeper-data\n*.swp\n");

            let mut architecture = String::from("# Architecture\n\n");
            for rule in DEPENDENCY_TABLE {
                let mut manifest = format!("[package]\nname = \"{}\"\n\n[dependencies]\n", rule.name);
                for internal in rule.internal {
                    manifest.push_str(&format!("{internal}.workspace = true\n"));
                }
                fixture.write(&format!("crates/{}/Cargo.toml", rule.name), &manifest);
                fixture.write(
                    &format!("crates/{}/src/lib.rs", rule.name),
                    "//! A crate.\n\npub fn f() {}\n",
                );
                architecture.push_str(&format!("- `{}`: a crate.\n", rule.name));
            }
            fixture.write("ARCHITECTURE.md", &architecture);
            fixture.write("xtask/src/main.rs", "//! xtask.\nfn main() {}\n");
            fixture.write(
                "README.md",
                "# certkeeper\n\n    cargo run --release -- serve\n    scripts/test.sh\n",
            );
            fixture.write(".ci/run", "#!/bin/sh\nexec scripts/test.sh\n");
            fixture.write("scripts/test.sh", "#!/bin/sh\ncargo test --workspace\n");
            fixture.write("crates/ck-store/migrations/sqlite/0001_init.sql", "SELECT 1;\n");
            fixture.write("crates/ck-store/migrations/postgres/0001_init.sql", "SELECT 1;\n");
            fixture
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.path(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn append(&self, rel: &str, text: &str) {
            let old = fs::read_to_string(self.path(rel)).unwrap();
            self.write(rel, &format!("{old}{text}"));
        }

        fn remove(&self, rel: &str) {
            let path = self.path(rel);
            if path.is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    /// Asserts exactly one violation, containing every one of `parts`.
    fn assert_one(violations: &[String], parts: &[&str]) {
        assert_eq!(violations.len(), 1, "expected one violation, got {violations:#?}");
        for part in parts {
            assert!(
                violations[0].contains(part),
                "violation {:?} does not mention {part:?}",
                violations[0]
            );
        }
    }

    fn all_checks(root: &Path) -> Vec<String> {
        let mut all = check_dependency_direction(root);
        all.extend(check_architecture_mentions_every_crate(root));
        all.extend(check_every_module_has_docs(root));
        all.extend(check_no_ignore_or_should_panic(root));
        all.extend(check_no_trailing_whitespace(root));
        all.extend(check_migration_parity(root));
        all.extend(check_readme_first_lines(root));
        all.extend(check_no_module_import_cycles(root));
        all.extend(check_services_keep_their_fields(root));
        all
    }

    #[test]
    fn clean_fixture_passes_every_check() {
        let fixture = Fixture::clean();
        assert_eq!(all_checks(&fixture.root), Vec::<String>::new());
    }

    /// Violations of `check_dependency_direction` after appending `toml` to
    /// the manifest of `krate` in a clean fixture.
    fn deps_after(krate: &str, toml: &str) -> Vec<String> {
        let fixture = Fixture::clean();
        fixture.append(&format!("crates/{krate}/Cargo.toml"), toml);
        check_dependency_direction(&fixture.root)
    }

    #[test]
    fn dependency_direction_flags_violations() {
        // Internal crate not allowed, in each spelling.
        for spelling in [
            "ck-pki.workspace = true\n",
            "ck-pki = { workspace = true }\n",
            "ck-pki = { path = \"../ck-pki\" }\n",
        ] {
            assert_one(
                &deps_after("ck-domain", spelling),
                &["crates/ck-domain/Cargo.toml", "`ck-pki`", "no internal crate"],
            );
        }
        assert_one(
            &deps_after("ck-client", "ck-domain.workspace = true\n"),
            &["crates/ck-client/Cargo.toml", "`ck-domain`", "ck-api-types"],
        );
        // Forbidden external crates, plain version, family member, rename.
        assert_one(
            &deps_after("ck-domain", "serde = \"1\"\n"),
            &["crates/ck-domain/Cargo.toml", "`serde`"],
        );
        assert_one(
            &deps_after("ck-domain", "serde_json = \"1\"\n"),
            &["`serde_json`", "`serde`"],
        );
        assert_one(
            &deps_after("ck-domain", "rt = { package = \"tokio\", version = \"1\" }\n"),
            &["`tokio`"],
        );
        assert_one(
            &deps_after("ck-server", "axum-extra = \"0.10\"\n"),
            &["crates/ck-server/Cargo.toml", "`axum-extra`", "`axum`"],
        );
        // Build dependencies obey the forbidden lists.
        assert_one(
            &deps_after("ck-pki", "\n[build-dependencies]\ntokio.workspace = true\n"),
            &["[build-dependencies]", "`tokio`"],
        );
        // Target-specific dependencies are normal dependencies.
        assert_one(
            &deps_after("ck-pki", "\n[target.'cfg(unix)'.dependencies]\nhyper = \"1\"\n"),
            &["[target.'cfg(unix)'.dependencies]", "`hyper`"],
        );
        // Only ck-store uses sqlx; only ck-api and certkeeper use axum.
        assert_one(
            &deps_after("ck-server", "sqlx.workspace = true\n"),
            &["crates/ck-server/Cargo.toml", "only ck-store"],
        );
        assert_one(
            &deps_after("ck-store", "axum.workspace = true\n"),
            &["crates/ck-store/Cargo.toml", "`axum`"],
        );
        assert_one(
            &deps_after("certkeeper", "sqlx.workspace = true\n"),
            &["crates/certkeeper/Cargo.toml", "only ck-store may depend on `sqlx`"],
        );
        // Allowed: the owners, dev-dependencies on helpers and internal crates.
        assert!(deps_after("ck-store", "sqlx.workspace = true\n").is_empty());
        assert!(deps_after("ck-api", "axum = { workspace = true }\n").is_empty());
        assert!(deps_after("ck-server", "tokio = \"1\"\n").is_empty());
        assert!(
            deps_after(
                "ck-store",
                "\n[dev-dependencies]\ntokio.workspace = true\nck-pki.workspace = true\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn dependency_direction_flags_unknown_crate_folder() {
        let fixture = Fixture::clean();
        fixture.write("crates/ck-unknown/Cargo.toml", "[package]\nname = \"ck-unknown\"\n");
        assert_one(
            &check_dependency_direction(&fixture.root),
            &[
                "crates/ck-unknown/",
                "add it to DEPENDENCY_TABLE in xtask/src/tidy.rs",
                "ARCHITECTURE.md",
            ],
        );
    }

    #[test]
    fn dependency_direction_flags_bad_manifests() {
        let fixture = Fixture::clean();
        fixture.write("crates/ck-pki/Cargo.toml", "[package]\nname = \"pki\"\n");
        assert_one(
            &check_dependency_direction(&fixture.root),
            &["crates/ck-pki/Cargo.toml", "package.name"],
        );
        fixture.write("crates/ck-pki/Cargo.toml", "[package\n");
        assert_one(&check_dependency_direction(&fixture.root), &["not valid TOML"]);
        fixture.remove("crates/ck-pki/Cargo.toml");
        assert_one(&check_dependency_direction(&fixture.root), &["cannot read"]);
    }

    #[test]
    fn architecture_flags_missing_file_and_crates() {
        let fixture = Fixture::clean();
        let text = fs::read_to_string(fixture.path("ARCHITECTURE.md")).unwrap();
        let without_api = text.replace("- `ck-api`: a crate.\n", "");
        assert!(without_api.contains("ck-api-types"));
        fixture.write("ARCHITECTURE.md", &without_api);
        assert_one(
            &check_architecture_mentions_every_crate(&fixture.root),
            &["ARCHITECTURE.md", "crates/ck-api:"],
        );
        fixture.remove("ARCHITECTURE.md");
        assert_one(
            &check_architecture_mentions_every_crate(&fixture.root),
            &["ARCHITECTURE.md is missing", "ck-domain"],
        );
    }

    #[test]
    fn module_docs_flag_undocumented_files() {
        for rel in [
            "crates/ck-pki/src/sign.rs",
            "crates/ck-pki/src/sign/csr.rs",
            "crates/ck-pki/tests/peer.rs",
            "crates/ck-pki/benches/sign.rs",
            "crates/ck-pki/build.rs",
            "xtask/src/other.rs",
        ] {
            let fixture = Fixture::clean();
            fixture.write(rel, "// not a module doc\nfn f() {}\n");
            assert_one(&check_every_module_has_docs(&fixture.root), &[rel, "`//!`"]);
            fixture.write(rel, "/// an item doc, not a module doc\nfn f() {}\n");
            assert_one(&check_every_module_has_docs(&fixture.root), &[rel]);
            fixture.write(rel, "");
            assert_one(&check_every_module_has_docs(&fixture.root), &[rel]);
            fixture.write(rel, "\n\n//! Docs after blank lines are fine.\n");
            assert!(check_every_module_has_docs(&fixture.root).is_empty());
        }
    }

    #[test]
    fn ignore_and_should_panic_are_flagged() {
        let ignore = concat!("#[", "ignore", "]");
        let ignore_reason = concat!("#[", "ignore", " = \"slow\"]");
        let should_panic = concat!("#[", "should_panic", "(expected = \"boom\")]");
        for (attribute, expected) in [
            (ignore, "never silently skipped"),
            (ignore_reason, "never silently skipped"),
            (should_panic, "assert on the `Err`"),
        ] {
            let fixture = Fixture::clean();
            fixture.write(
                "crates/ck-server/tests/peer.rs",
                &format!("//! Peer tests.\n\n#[test]\n{attribute}\nfn t() {{}}\n"),
            );
            assert_one(
                &check_no_ignore_or_should_panic(&fixture.root),
                &["crates/ck-server/tests/peer.rs:4:", expected],
            );
        }
    }

    #[test]
    fn trailing_whitespace_is_flagged() {
        for rel in [
            "README.md",
            "Cargo.toml",
            "crates/ck-api/src/lib.rs",
            "scripts/test.sh",
            "crates/ck-store/migrations/sqlite/0001_init.sql",
        ] {
            let fixture = Fixture::clean();
            fixture.append(rel, "fine\ntrailing space \nfine\n");
            assert_one(
                &check_no_trailing_whitespace(&fixture.root),
                &[rel, "trailing whitespace"],
            );
            fixture.append(rel, "tab\t\n");
            assert_eq!(check_no_trailing_whitespace(&fixture.root).len(), 2);
        }
        // Ignored: other extensions, target/, .git/ and root-anchored .gitignore entries.
        let fixture = Fixture::clean();
        for rel in [
            "notes.txt",
            "target/debug/x.rs",
            "crates/ck-api/target/x.rs",
            ".git/x.md",
            "certkeeper-data/x.sql",
        ] {
            fixture.write(rel, "trailing \n");
        }
        assert!(check_no_trailing_whitespace(&fixture.root).is_empty());
    }

    #[test]
    fn migration_parity_flags_differences() {
        let fixture = Fixture::clean();
        fixture.write("crates/ck-store/migrations/sqlite/0002_jobs.sql", "SELECT 1;\n");
        assert_one(
            &check_migration_parity(&fixture.root),
            &["migrations/sqlite/0002_jobs.sql", "migrations/postgres/0002_jobs.sql"],
        );
        fixture.write("crates/ck-store/migrations/postgres/0002_job.sql", "SELECT 1;\n");
        assert_eq!(check_migration_parity(&fixture.root).len(), 2);

        fixture.remove("crates/ck-store/migrations/postgres");
        assert_one(
            &check_migration_parity(&fixture.root),
            &["migrations/postgres/ does not"],
        );
        fixture.remove("crates/ck-store/migrations/sqlite");
        assert!(check_migration_parity(&fixture.root).is_empty());
    }

    #[test]
    fn readme_and_ci_are_flagged() {
        let fixture = Fixture::clean();
        fixture.write(
            "README.md",
            &format!(
                "# certkeeper\n\nscripts/test.sh\n{}cargo run --release -- serve\n",
                "\n".repeat(13)
            ),
        );
        assert_one(
            &check_readme_first_lines(&fixture.root),
            &["README.md", "first 15 lines", "serve"],
        );
        fixture.write("README.md", "# certkeeper\n\ncargo run --release -- serve\n");
        assert_one(
            &check_readme_first_lines(&fixture.root),
            &["README.md", "scripts/test.sh"],
        );
        fixture.remove("README.md");
        assert_one(&check_readme_first_lines(&fixture.root), &["README.md is missing"]);

        let fixture = Fixture::clean();
        fixture.write(".ci/run", "#!/bin/sh\ncargo test\n");
        assert_one(
            &check_readme_first_lines(&fixture.root),
            &[".ci/run", "scripts/test.sh"],
        );
        fixture.remove(".ci/run");
        assert_one(&check_readme_first_lines(&fixture.root), &[".ci/run is missing"]);
    }

    #[test]
    fn import_cycles_are_flagged_outside_the_exempt_crates() {
        let fixture = Fixture::clean();
        let files = [
            ("src/lib.rs", "//! A crate.\nmod a;\nmod b;\n"),
            ("src/a.rs", "//! A.\nuse crate::b::B;\npub struct A;\n"),
            ("src/b.rs", "//! B.\npub struct B;\n\nfn f(_: crate::a::A) {}\n"),
        ];
        for (rel, text) in files {
            fixture.write(&format!("crates/ck-pki/{rel}"), text);
        }
        assert_one(
            &check_no_module_import_cycles(&fixture.root),
            &[
                "ck-pki (lib)",
                "modules a, b",
                "a -> b (crates/ck-pki/src/a.rs:2)",
                "b -> a (crates/ck-pki/src/b.rs:4)",
                "leaf module",
                "cargo run -p xtask -- modules ck-pki",
            ],
        );
        // One way only: clean.
        fixture.write("crates/ck-pki/src/b.rs", "//! B.\npub struct B;\n");
        assert!(check_no_module_import_cycles(&fixture.root).is_empty());
        // A cycle through the root's items counts too; its re-exports resolve to their module.
        fixture.write(
            "crates/ck-pki/src/lib.rs",
            "//! A crate.\nmod a;\nmod b;\npub use a::A;\n",
        );
        fixture.write(
            "crates/ck-pki/src/b.rs",
            "//! B.\npub struct B;\nfn f(_: crate::A) {}\n",
        );
        assert_one(&check_no_module_import_cycles(&fixture.root), &["modules a, b"]);
    }

    #[test]
    fn service_fields_must_be_private() {
        let fixture = Fixture::clean();
        fixture.write(
            "crates/ck-server/src/lib.rs",
            "//! A crate.\nmod control_plane;\nmod pki;\n",
        );
        fixture.write(
            "crates/ck-server/src/control_plane.rs",
            "//! The composition.\npub struct ControlPlane {\n    pub pki: crate::pki::Pki,\n}\n\
             pub(crate) struct ControlPlaneInner {\n    pub(crate) lock: u8,\n}\n",
        );
        fixture.write(
            "crates/ck-server/src/pki.rs",
            "//! Pki.\n#[derive(Clone)]\npub struct Pki<T = Vec<(u8, u8)>>\nwhere\n    T: Fn(u8) -> u8,\n{\n\
             \x20   #[allow(dead_code)]\n    pub(in crate::pki) cache: HashMap<String, fn(u8) -> u8>,\n    \
             store: T,\n}\npub(crate) struct PkiState(pub(crate) u8, u16);\n\
             struct Other {\n    pub(crate) free: u8,\n}\nstruct PkiStateless { pub(crate) x: u8 }\n\
             // struct Pki { pub(crate) commented: u8 }\n\
             #[cfg(test)]\nmod tests {\n    struct Pki {\n        pub x: u8,\n    }\n}\n",
        );
        let violations = check_services_keep_their_fields(&fixture.root);
        assert_eq!(violations.len(), 3, "{violations:#?}");
        for (violation, parts) in violations.iter().zip([
            &[
                "crates/ck-server/src/control_plane.rs:6:",
                "field `lock` of `ControlPlaneInner` is `pub(crate)`",
                "SERVICE_TYPES",
            ][..],
            &[
                "crates/ck-server/src/pki.rs:8:",
                "`cache` of `Pki` is `pub(in crate::pki)`",
            ][..],
            &[
                "crates/ck-server/src/pki.rs:11:",
                "field `0` of `PkiState` is `pub(crate)`",
            ][..],
        ]) {
            for part in parts {
                assert!(violation.contains(part), "{violation:?} does not mention {part:?}");
            }
        }
        // Private fields everywhere: clean; and so is a crate with none of the types yet.
        fixture.write(
            "crates/ck-server/src/control_plane.rs",
            "//! The composition.\npub struct ControlPlane {\n    pub pki: crate::pki::Pki,\n}\n",
        );
        fixture.write(
            "crates/ck-server/src/pki.rs",
            "//! Pki.\npub struct Pki {\n    cache: u8,\n}\n",
        );
        assert!(check_services_keep_their_fields(&fixture.root).is_empty());
    }
}
