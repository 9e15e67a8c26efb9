#!/usr/bin/env bash
# scripts/test.sh [CARGO TEST ARGS...]
#
# The project's test command (CI runs it through .ci/run). Run it as root
# (`sudo scripts/test.sh`) so it can install the Debian packages; once they
# are installed it also works as a normal user.
#
# Steps: install deps -> find cargo -> rustfmt/clippy components -> fmt check
# -> clippy -D warnings -> throwaway PostgreSQL -> cargo audit (offline)
# -> cargo test --workspace -> fuzz smoke runs.
#
# Extra arguments go to `cargo test --workspace --locked`, e.g.
#   scripts/test.sh -- --nocapture        show test output
#   scripts/test.sh some_test_name        only tests whose name matches
# (`-p CRATE` does not narrow it: cargo lets --workspace win.)
# Environment:
#   CK_SKIP_LINT=1      skip the fmt and clippy steps (quick local runs)
#   CK_KEEP_WORKDIR=1   keep the postgres work dir after the run (debugging)
#   CK_SKIP_FUZZ=1      skip building and smoke-running the fuzz targets
#   CERTKEEPER_ADVISORY_DB=DIR  audit against this RustSec advisory database (a newer
#                       copy) instead of the snapshot in audit/advisory-db.tar.gz
#
# The tests get CERTKEEPER_TEST_POSTGRES_URL (the cluster) and
# CERTKEEPER_REQUIRE_PEERS=1 (a missing peer is a failure, not a skip).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
T0=$(date +%s)
SCHEMATHESIS_VERSION=4.32.5
CARGO_AUDIT_VERSION=0.22.2

step() { printf '\n==> %s\n' "$*"; }
die() { echo "ERROR: $*" >&2; exit 1; }

# run CMD...: run a long step in its own process group and wait for it.
# Why: bash defers INT/TERM traps until a foreground child exits, so
# `timeout 600 scripts/test.sh` (TERM to us only) would otherwise wait for the
# whole cargo build/test; and killing only cargo would orphan the running test
# binary. `wait` is interrupted by trapped signals, and the group kill below
# reaches cargo and everything it started.
# Details: bash starts background commands with INT/QUIT ignored, which the
# tests (and any daemon they spawn and signal) would inherit, so env(1)
# restores the defaults; setsid -w keeps waiting/exit status right even in the
# odd case where setsid has to fork; stdin is /dev/null (as in CI).
child=""
run() {
  local rc=0
  setsid -w env --default-signal=INT --default-signal=QUIT "$@" &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}
on_signal() {
  if [ -n "$child" ]; then
    kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit "$1"
}
# Exiting through `exit` also runs the EXIT trap (postgres cleanup, below);
# bash does not reliably run it when killed by INT/TERM otherwise.
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# --- 1. Debian packages -----------------------------------------------------
step "install Debian dependencies (scripts/install-deps.sh)"
bash "$REPO/scripts/install-deps.sh"

# --- 2. cargo -----------------------------------------------------------------
step "locate cargo"
# rustup puts cargo in ~/.cargo/bin, which non-login shells (CI, sudo) often
# lack on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-}/.cargo/bin/cargo" ]; then
  PATH="$HOME/.cargo/bin:$PATH"
  export PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
  # Typical case: `sudo scripts/test.sh` by a developer whose rustup lives in
  # their own home. The packages are installed by now, so running as that
  # user works (and keeps target/ from filling up with root-owned files).
  if [ -n "${SUDO_USER:-}" ]; then
    die "cargo not found for root (rustup is per user). The Debian packages are installed now; run 'scripts/test.sh' as $SUDO_USER, without sudo."
  fi
  die "cargo not found on PATH nor in ${HOME:-~}/.cargo/bin; install the Rust toolchain with rustup (https://rustup.rs)"
fi
echo "$(command -v cargo): $(cargo --version)"

lint=1
if [ "${CK_SKIP_LINT:-0}" = 1 ]; then lint=0; fi

if [ $lint = 1 ]; then
  # --- 3. rustfmt / clippy ------------------------------------------------------
  step "ensure rustfmt and clippy components"
  missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v rustup >/dev/null 2>&1 || die "cargo ${missing[*]} missing and rustup not found to add them"
    run rustup component add "${missing[@]}"
  fi
  echo "$(cargo fmt --version); $(cargo clippy --version)"

  # --- 4. formatting ----------------------------------------------------------
  step "cargo fmt --all -- --check"
  run cargo fmt --all -- --check

  # --- 5. lints -----------------------------------------------------------------
  step "cargo clippy --workspace --all-targets --locked -- -D warnings"
  run cargo clippy --workspace --all-targets --locked -- -D warnings
else
  step "lint steps skipped (CK_SKIP_LINT=1)"
fi

# --- 6. PostgreSQL --------------------------------------------------------------
step "start throwaway PostgreSQL 15"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/certkeeper-test.XXXXXX")
# (Short path on purpose: the unix socket path inside must stay < 108 bytes.)
# mktemp -d gives 0700; the postgres user (when we are root) must traverse it.
chmod 755 "$WORK"
cleanup() {
  local rc=$?
  trap - EXIT
  bash "$REPO/scripts/stop-services.sh" "$WORK" || true
  # On failure show what postgres complained about (the rest of its log is
  # startup/shutdown noise; "starting up" FATALs are start-postgres.sh's own
  # readiness probes). Tests that provoke errors on purpose show up here too,
  # so this is a hint, not a verdict.
  local errs=""
  if [ "$rc" != 0 ] && [ -f "$WORK/pg/postgres.log" ]; then
    errs=$(grep -E 'ERROR|FATAL|PANIC' "$WORK/pg/postgres.log" \
      | grep -v 'the database system is starting up' | tail -n 15 || true)
  fi
  if [ -n "$errs" ]; then
    echo "---- postgres log: last ERROR/FATAL/PANIC lines (run failed; CK_KEEP_WORKDIR=1 keeps the full log) ----" >&2
    echo "$errs" >&2
    echo "----" >&2
  fi
  if [ "${CK_KEEP_WORKDIR:-0}" = 1 ]; then
    echo "kept work dir $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT

bash "$REPO/scripts/start-postgres.sh" "$WORK" > /dev/null
# shellcheck source=/dev/null
source "$WORK/pg/env.sh"
export CERTKEEPER_REQUIRE_PEERS=1
echo "CERTKEEPER_TEST_POSTGRES_URL=$CERTKEEPER_TEST_POSTGRES_URL"
echo "CERTKEEPER_REQUIRE_PEERS=$CERTKEEPER_REQUIRE_PEERS"

# --- 6b. schemathesis ----------------------------------------------------------
# The OpenAPI conformance test (crates/certkeeper/tests/it/openapi.rs) runs, against a
# real server, for the operator token and then for an agent token:
#   schemathesis run <url>/api/v1/openapi.json -H 'Authorization: Bearer <token>' \
#     --checks all --exclude-checks positive_data_acceptance --max-examples 50 ...
step "schemathesis $SCHEMATHESIS_VERSION from PyPI (OpenAPI conformance)"
ST_VENV="$REPO/target/schemathesis-venv"
if ! "$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  /usr/bin/python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "pip install schemathesis==$SCHEMATHESIS_VERSION failed (PyPI reachable?)"
fi
export CERTKEEPER_SCHEMATHESIS="$ST_VENV/bin/schemathesis"

# --- 6c. dependency advisories ---------------------------------------------------
# cargo audit, offline, against a dated RustSec snapshot kept in the repository
# (audit/advisory-db.tar.gz, unpacked into target/); CERTKEEPER_ADVISORY_DB points at
# another copy. Exceptions, each with its reason and date: .cargo/audit.toml.
step "cargo audit $CARGO_AUDIT_VERSION (offline, advisory database snapshot)"
if ! cargo audit --version 2>/dev/null | grep -qF "$CARGO_AUDIT_VERSION"; then
  run cargo install cargo-audit --version "$CARGO_AUDIT_VERSION" --locked \
    || die "cargo install cargo-audit --version $CARGO_AUDIT_VERSION failed (crates.io reachable?)"
fi
if [ -n "${CERTKEEPER_ADVISORY_DB:-}" ]; then
  ADVISORY_DB=$CERTKEEPER_ADVISORY_DB
else
  ADVISORY_TAR="$REPO/audit/advisory-db.tar.gz"
  [ -f "$ADVISORY_TAR" ] || die "$ADVISORY_TAR is missing: restore it from git, or set CERTKEEPER_ADVISORY_DB"
  ADVISORY_DB="$REPO/target/advisory-db"
  if [ ! -f "$ADVISORY_DB/SNAPSHOT" ] || [ "$ADVISORY_TAR" -nt "$ADVISORY_DB/SNAPSHOT" ]; then
    rm -rf "$ADVISORY_DB"
    mkdir -p "$REPO/target"
    tar -xzf "$ADVISORY_TAR" -C "$REPO/target"
    touch "$ADVISORY_DB/SNAPSHOT"
  fi
fi
[ -d "$ADVISORY_DB/crates" ] || die "$ADVISORY_DB is not a RustSec advisory database (no crates/ inside)"
echo "advisory database: $ADVISORY_DB ($(head -n 1 "$ADVISORY_DB/SNAPSHOT" 2>/dev/null || echo 'no SNAPSHOT file'))"
for lock in "$REPO/Cargo.lock" "$REPO/fuzz/Cargo.lock"; do
  run cargo audit --db "$ADVISORY_DB" --no-fetch --stale --deny warnings --file "$lock"
done

# --- 7. tests -------------------------------------------------------------------
# Plain `cargo test` (not nextest) so the usual "test result:" lines appear.
step "cargo test --workspace --locked $*"
run cargo test --workspace --locked "$@"

# The simulated month ran above; run it again with its summary shown, for the log.
step "simulated month (summary)"
run cargo test -q --locked -p ck-domain --test simulated_month -- --nocapture --test-threads 1

# --- 8. fuzz targets: build, and a short smoke run each -----------------------
# The real fuzzing runs are long and manual (see fuzz/README.md); CI only makes sure the
# targets build and survive their seeds plus a few seconds of mutation.
if [ "${CK_SKIP_FUZZ:-0}" = 1 ]; then
  step "fuzz smoke skipped (CK_SKIP_FUZZ=1)"
else
  step "fuzz targets: build and smoke-run (fuzz/)"
  command -v rustup >/dev/null 2>&1 || die "rustup not found: the fuzz targets need a nightly toolchain"
  rustup run nightly rustc --version >/dev/null 2>&1 || run rustup toolchain install nightly --profile minimal
  cargo fuzz --version >/dev/null 2>&1 || run cargo install cargo-fuzz --version 0.13.2 --locked
  FUZZ_CORPUS="$WORK/fuzz-corpus"
  for target in $(cd "$REPO/fuzz" && cargo fuzz list); do
    mkdir -p "$FUZZ_CORPUS/$target"
    if ! (cd "$REPO/fuzz" && run cargo +nightly fuzz run -O "$target" "$FUZZ_CORPUS/$target" "seeds/$target" \
      -- -max_total_time=10 -print_final_stats=1) > "$WORK/fuzz-$target.log" 2>&1; then
      tail -n 40 "$WORK/fuzz-$target.log" >&2
      die "fuzz target $target failed its smoke run (crash input under fuzz/artifacts/$target)"
    fi
    echo "$target: $(grep -E '^stat::number_of_executed_units' "$WORK/fuzz-$target.log" || echo 'ran')"
  done
fi

step "all steps passed in $(( $(date +%s) - T0 )) s"
