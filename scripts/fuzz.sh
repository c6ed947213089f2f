#!/usr/bin/env bash
# Fuzzes every hand-written parser of client input (fuzz/fuzz_targets/,
# listed in fuzz/README.md) with cargo fuzz and libFuzzer, each target for
# FUZZ_SECONDS seconds (default 30), one after the other.
#
#   scripts/fuzz.sh                      # every target, 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh     # longer
#   scripts/fuzz.sh direct_head          # only the targets named
#
# - cargo-fuzz is installed (`cargo install cargo-fuzz --locked`, into
#   ~/.cargo/bin) only when `cargo fuzz` is missing.
# - The machine has a stable toolchain only: cargo fuzz's nightly flags
#   (-Zsanitizer=address, …) are let through with RUSTC_BOOTSTRAP=1.
# - Builds go to fuzz/target (git-ignored), not the root target/, with
#   FUZZ_BUILD_JOBS parallel jobs (default 1: the build then never takes
#   both cores from someone compiling beside it).
# - Each target starts from its committed seeds, fuzz/corpus/<target>/,
#   copied into fuzz/target/fuzz-corpus/<target>/ where libFuzzer adds what
#   it finds (kept between runs, never committed), so the repository's
#   corpus does not grow.
# - Exits non-zero when any target crashes (a panic, a failed invariant, a
#   sanitizer report, a timeout or out-of-memory) and prints where the input
#   that did it was written (fuzz/artifacts/<target>/…) and how to replay it.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
FUZZ_DIR=$ROOT/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-30}
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${FUZZ_BUILD_JOBS:-1}
# Per-input limits: an input that takes longer, or a process that grows
# larger, is a finding too.
TIMEOUT_EACH=${FUZZ_TIMEOUT:-20}
RSS_LIMIT_MB=${FUZZ_RSS_LIMIT_MB:-2048}

if ! [[ $SECONDS_EACH =~ ^[0-9]+$ ]] || ((SECONDS_EACH < 1)); then
    echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, not '$SECONDS_EACH'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (once; into ~/.cargo/bin)"
    CARGO_TARGET_DIR=$FUZZ_DIR/target/cargo-install cargo install cargo-fuzz --locked
fi

mapfile -t ALL < <(cd "$FUZZ_DIR" && cargo fuzz list --fuzz-dir "$FUZZ_DIR")
if (($# > 0)); then
    TARGETS=("$@")
    for t in "${TARGETS[@]}"; do
        if ! printf '%s\n' "${ALL[@]}" | grep -qx -- "$t"; then
            echo "fuzz.sh: no fuzz target '$t' (there are: ${ALL[*]})" >&2
            exit 2
        fi
    done
else
    TARGETS=("${ALL[@]}")
fi

echo "fuzz.sh: building ${#TARGETS[@]} target(s) in fuzz/target (jobs: $CARGO_BUILD_JOBS)"
for t in "${TARGETS[@]}"; do
    cargo fuzz build --fuzz-dir "$FUZZ_DIR" "$t"
done
# The binaries just built are run as they are (not through `cargo fuzz
# run`, which would rebuild first whenever src/ changed meanwhile).
HOST=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR=$FUZZ_DIR/target/$HOST/release
# What `cargo fuzz run` sets too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

LOGS=$FUZZ_DIR/target/fuzz-logs
mkdir -p "$LOGS"
declare -a SUMMARY=()
FAILED=0
for t in "${TARGETS[@]}"; do
    seeds=$FUZZ_DIR/corpus/$t
    work=$FUZZ_DIR/target/fuzz-corpus/$t
    mkdir -p "$work"
    if [[ -d $seeds ]]; then
        cp -R -p "$seeds"/. "$work"/
    fi
    # A head must be able to pass MAX_HEAD (8 KiB) for the direct path's
    # limit to be fuzzed; libFuzzer's default is 4 KiB (or the largest seed).
    max_len=()
    [[ $t == direct_head ]] && max_len=(-max_len=10000)
    log=$LOGS/$t.log
    echo "fuzz.sh: $t for ${SECONDS_EACH}s (log: ${log#"$ROOT"/})"
    artifacts=$FUZZ_DIR/artifacts/$t
    mkdir -p "$artifacts"
    set +e
    "$BIN_DIR/$t" "$work" \
        -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT_EACH" -rss_limit_mb="$RSS_LIMIT_MB" \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "${max_len[@]}" >"$log" 2>&1
    status=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$( (grep -Eo 'cov: [0-9]+' "$log" || true) | tail -n 1 | cut -d' ' -f2)
    corpus_size=$(find "$work" -type f | wc -l)
    if ((status == 0)); then
        SUMMARY+=("$(printf '%-22s ok     %6ss  %12s execs  cov %-6s corpus %s' "$t" "$SECONDS_EACH" "${execs:-?}" "${cov:-?}" "$corpus_size")")
    else
        FAILED=1
        crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        SUMMARY+=("$(printf '%-22s FAILED (exit %s)  %s execs  input: %s' "$t" "$status" "${execs:-?}" "${crash:-none written, see the log}")")
        echo "fuzz.sh: $t FAILED (full log: ${log#"$ROOT"/}):" >&2
        {
            grep -m1 -A8 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" || true
            echo "   …"
            sed -n '/^SUMMARY: /,$p' "$log" | grep -v '^stat::' || true
        } >&2
        if [[ -n $crash ]]; then
            echo >&2
            echo "fuzz.sh: the input is $crash" >&2
            echo "fuzz.sh: replay it:  ${BIN_DIR#"$ROOT"/}/$t ${crash#"$ROOT"/}" >&2
            echo "fuzz.sh:   (or, rebuilding first: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t ${crash#"$ROOT"/})" >&2
            echo "fuzz.sh: shrink it:  RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz $t ${crash#"$ROOT"/}" >&2
        fi
    fi
done

echo
echo "fuzz.sh: summary (${SECONDS_EACH}s per target)"
printf '  %s\n' "${SUMMARY[@]}"
if ((FAILED)); then
    echo "fuzz.sh: at least one target crashed; inputs are under fuzz/artifacts/" >&2
    exit 1
fi
