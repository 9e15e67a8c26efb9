#!/usr/bin/env bash
# scripts/install-deps.sh
#
# Installs the Debian 12 (bookworm) packages that certkeeper's tests need.
# Idempotent: when everything is already installed it only asks dpkg and
# returns in well under a second, without touching apt at all.
#
# Prints exactly one line on success. On failure prints the tail of the apt
# log and an "ERROR: ..." line, and exits 1.
#
# Needs root to install. Without root it still succeeds when nothing is
# missing (so a developer can run scripts/test.sh as a normal user once the
# packages are in), and otherwise says what to install.
set -euo pipefail

# What the tests use, and why:
#   postgresql-15   throwaway database cluster (scripts/start-postgres.sh);
#                   also brings postgresql-client-15 (psql, pg_isready)
#   openssl         generating test CAs/certificates from the tests
#   curl            poking HTTP endpoints of services under test
#   iproute2        `ss`, used to find free ports
#   util-linux      `setpriv`, to run postgres as the postgres user
#   ca-certificates TLS trust store for anything talking HTTPS
#   pebble          ACME test CA + pebble-challtestsrv (ck-test-peers, start-pebble.sh)
#   bind9           real authoritative DNS server for RFC 2136 / dns-01 tests
#   bind9-utils     named-checkconf, tsig-keygen (BIND fixture)
#   bind9-dnsutils  dig and nsupdate, to check what a DNS server really answers
#   lego, certbot   reference ACME clients (interop tests, scripts/bench-acme.sh)
#   nginx, haproxy  real TLS servers the agent deploys to (ck-agent tests)
#   scep            micromdm's scepclient: the reference SCEP client (pki tests)
#   faketime        runs the server in the past or future, to get certificates that are expired
#                   or not yet valid from its own CA (security::scep renewal tests)
#   prometheus      promtool: lints /metrics and checks and unit-tests deploy/prometheus/alerts.yml
#   python3-venv    a virtualenv for schemathesis from PyPI (scripts/test.sh)
#   python3-aiosmtpd real SMTP server (plain, STARTTLS, implicit TLS) for ck-notify's email tests
#   chromium, chromium-driver  headless browser and chromedriver: web UI tests over WebDriver
#                   (ck-test-peers' ChromeDriver, driven with fantoccini)
#   fonts-liberation only recommended by chromium, so not installed by the --no-install-recommends
#                   below: without it pages fall back to DejaVu and UI screenshots differ between
#                   machines
PKGS=(postgresql-15 openssl curl iproute2 util-linux ca-certificates
      pebble bind9 bind9-utils bind9-dnsutils lego certbot nginx haproxy scep faketime prometheus
      python3 python3-venv python3-aiosmtpd chromium chromium-driver fonts-liberation)

LOG=${TMPDIR:-/tmp}/certkeeper-install-deps.log
T0=$(date +%s)

# --- which packages are missing? ---------------------------------------------
# "ii" = desired install, currently installed. Anything else (not installed,
# half-configured, removed with config left) counts as missing.
missing=()
for p in "${PKGS[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${status:0:2}" = ii ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages already installed (${PKGS[*]})"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "ERROR: missing Debian packages: ${missing[*]}" >&2
  echo "ERROR: run 'sudo scripts/install-deps.sh' (or: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi

# --- keep package postinst scripts from starting daemons ---------------------
# postgresql-15's postinst would otherwise start a system cluster on :5432,
# and bind9's a system named on 0.0.0.0:53.
# policy-rc.d exiting 101 tells invoke-rc.d "not allowed". Only create it if
# absent, and then only for the duration of this script.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if [ "$created_policy" = 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT
# Make sure INT/TERM also run the EXIT trap (bash does not always do so).
trap 'exit 130' INT
trap 'exit 143' TERM
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# temporary, created by certkeeper scripts/install-deps.sh\nexit 101\n' > "$POLICY"
  chmod 755 "$POLICY"
  created_policy=1
fi

# --- apt ---------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg (e.g. another test run) instead of failing.
APT_OPTS=(-q -o DPkg::Lock::Timeout=300)
: > "$LOG"

# The package lists are "fresh" if our stamp (written after a successful
# update) is less than a day old. We cannot use the mtimes of the files in
# /var/lib/apt/lists on their own: apt sets them to the server's
# Last-Modified time, which for bookworm's main Packages can be months old
# even right after an update. A list file newer than a day does prove a
# recent update, though, so accept that too.
STAMP=/var/lib/apt/periodic/update-success-stamp
lists_fresh() {
  [ -n "$(find "$STAMP" -maxdepth 0 -mmin -1440 2>/dev/null)" ] && return 0
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]
}
updated=0
apt_update() {
  echo "+ apt-get update" >> "$LOG"
  if apt-get "${APT_OPTS[@]}" update >> "$LOG" 2>&1; then
    mkdir -p "$(dirname "$STAMP")" && touch "$STAMP"
  fi
  # A failed update is not fatal by itself: the install below may still work
  # from the old lists, and if it does not, its error is the one to report.
  updated=1
}
apt_install() {
  echo "+ apt-get install ${missing[*]}" >> "$LOG"
  apt-get "${APT_OPTS[@]}" install -y --no-install-recommends --no-upgrade "${missing[@]}" >> "$LOG" 2>&1
}
fail() {
  echo "---- last lines of $LOG ----" >&2
  tail -n 25 "$LOG" >&2
  echo "----" >&2
  echo "ERROR: $*" >&2
  exit 1
}

lists_fresh || apt_update
if ! apt_install; then
  # Stale lists point at .debs the mirror no longer has (404): refresh once
  # and retry before giving up.
  if [ "$updated" = 0 ]; then
    apt_update
    apt_install || fail "apt-get install ${missing[*]} failed (full log: $LOG)"
  else
    fail "apt-get install ${missing[*]} failed (full log: $LOG)"
  fi
fi

echo "install-deps: installed ${missing[*]} in $(( $(date +%s) - T0 )) s"
