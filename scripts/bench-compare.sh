#!/usr/bin/env bash
# scripts/bench-compare.sh BASE_REF [COUNT]
#
# Issuance throughput of the certkeeper of git ref BASE_REF against the
# working tree's, on this machine, in one run: the issuance benchmark (COUNT
# certificates, default 2000, through the API of a server in the benchmark's
# process, on SQLite in a temporary directory) of the old and the new build
# alternately, 3 rounds each, then a table of the certificates/s of every
# round, the medians and the ratio new/old. For a change that should not move
# the figures (a refactoring), the ratio shows that it did not.
#
# The old build comes from a git worktree of BASE_REF under /tmp with a target
# directory of its own (BASE_TARGET_DIR, default /work/target-base when it can
# be written, else $TMPDIR/certkeeper-target-base), so the working tree's
# target directory keeps its artefacts. A ref from before the benchmarks left
# the shipped binary runs `certkeeper bench`; a later one `certkeeper-bench`.
# Release builds of both take a while (10+ minutes each on 2 cores the first
# time). A benchmark: it prints figures, it asserts nothing.
#
#   BENCH_CONCURRENCY=64     requests in flight (default 64)
#   BENCH_TIMEOUT=1800       seconds one run may take (default 1800)
set -euo pipefail

die() { echo "bench-compare: ERROR: $*" >&2; exit 2; }
log() { echo "bench-compare: $*" >&2; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/bench-compare.sh BASE_REF [COUNT]"
base_ref=$1
count=${2:-2000}
concurrency=${BENCH_CONCURRENCY:-64}
run_timeout=${BENCH_TIMEOUT:-1800}
rounds=3
[[ $count =~ ^[0-9]+$ ]] && (( count >= 1 && count <= 100000 )) || die "COUNT must be 1 to 100000, not '$count'"
[[ $concurrency =~ ^[0-9]+$ ]] && (( concurrency >= 1 && concurrency <= 4096 )) \
    || die "BENCH_CONCURRENCY must be 1 to 4096, not '$concurrency'"
[[ $run_timeout =~ ^[0-9]+$ ]] && (( run_timeout >= 10 )) || die "BENCH_TIMEOUT must be at least 10 (seconds)"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"

root="$(cd "$(dirname "$0")/.." && pwd)"
commit=$(git -C "$root" rev-parse --verify --quiet "$base_ref^{commit}") || die "'$base_ref' is not a commit of $root"
short=${commit:0:12}
head_short=$(git -C "$root" rev-parse --short=12 HEAD)

# The old build: a worktree of BASE_REF (reused when it is still at that commit).
worktree="/tmp/certkeeper-base-$short"
if [[ -d $worktree ]] && [[ $(git -C "$worktree" rev-parse HEAD 2>/dev/null) == "$commit" ]]; then
    log "reusing the worktree $worktree"
else
    [[ ! -e $worktree ]] || die "$worktree exists but is not a worktree at $short: remove it (git worktree remove --force $worktree)"
    log "adding a worktree of $short at $worktree"
    git -C "$root" worktree add --detach "$worktree" "$commit" >&2
fi
if [[ -n ${BASE_TARGET_DIR:-} ]]; then
    base_target=$BASE_TARGET_DIR
elif mkdir -p /work/target-base 2>/dev/null && [[ -w /work/target-base ]]; then
    base_target=/work/target-base
else
    base_target="${TMPDIR:-/tmp}/certkeeper-target-base"
fi
mkdir -p "$base_target"
new_target=${CARGO_TARGET_DIR:-$root/target}
# Cargo names a workspace crate's artefacts by its path inside the workspace, not by the
# checkout: in one target directory the two builds would take each other's crates for fresh.
[[ $(realpath -m "$new_target") != $(realpath -m "$base_target") ]] \
    || die "the old and the new build need target directories of their own (both are $base_target)"
if [[ -f $worktree/crates/ck-bench/Cargo.toml ]]; then
    old_package=ck-bench
    old_cmd=("$base_target/release/certkeeper-bench")
else
    old_package=certkeeper
    old_cmd=("$base_target/release/certkeeper" bench)
fi
log "building $old_package of $short (release, CARGO_TARGET_DIR=$base_target)…"
(cd "$worktree" && CARGO_TARGET_DIR=$base_target cargo build --release --locked -p "$old_package" >&2)

# The new build: certkeeper-bench of the working tree.
log "building ck-bench of the working tree (release)…"
(cd "$root" && cargo build --release --locked -p ck-bench >&2)
new_cmd=("$new_target/release/certkeeper-bench")

# Only the flags configure the runs, whatever this shell exports (CERTKEEPER_LOG would log).
while IFS= read -r name; do
    unset "$name"
done < <(compgen -e | grep '^CERTKEEPER_' || true)

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT

# One run: prints its certificates/s.
measure() {
    local label=$1 round=$2
    shift 2
    local out="$work/$label-$round.json" err="$work/$label-$round.log"
    log "round $round: $label ($*)…"
    if ! timeout "$run_timeout" "$@" --count "$count" --concurrency "$concurrency" --json >"$out" 2>"$err"; then
        tail -n 20 "$err" >&2
        die "the $label run of round $round failed (its last lines are above)"
    fi
    local rate
    rate=$(sed -n 's/^ *"certificates_per_second": *\([0-9.eE+-]*\),\{0,1\}$/\1/p' "$out")
    [[ -n $rate ]] || die "the $label run of round $round printed no certificates_per_second: $(head -c 400 "$out")"
    echo "$rate"
}

old_rates=()
new_rates=()
for ((round = 1; round <= rounds; round++)); do
    # Alternate which goes first, so neither always runs on a machine the other warmed.
    if ((round % 2 == 1)); then
        old_rates+=("$(measure old "$round" "${old_cmd[@]}")")
        new_rates+=("$(measure new "$round" "${new_cmd[@]}")")
    else
        new_rates+=("$(measure new "$round" "${new_cmd[@]}")")
        old_rates+=("$(measure old "$round" "${old_cmd[@]}")")
    fi
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
old_median=$(median "${old_rates[@]}")
new_median=$(median "${new_rates[@]}")

echo "issuance, $count certificates, $concurrency in flight, SQLite, $(nproc) cores (load average after: $(cut -d' ' -f1-3 /proc/loadavg)); certificates/s"
printf '%-8s %28s %28s\n' "round" "old ($short)" "new (tree at $head_short)"
for ((i = 0; i < rounds; i++)); do
    printf '%-8s %28.0f %28.0f\n' "$((i + 1))" "${old_rates[$i]}" "${new_rates[$i]}"
done
printf '%-8s %28.0f %28.0f\n' "median" "$old_median" "$new_median"
awk -v o="$old_median" -v n="$new_median" 'BEGIN { if (o > 0) printf "ratio new/old (medians): %.3f\n", n / o; else print "ratio new/old: n/a (old median is 0)" }'
echo "old: ${old_cmd[*]}"
echo "new: ${new_cmd[*]}"
