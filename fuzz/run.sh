#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the
# other, starting from the checked-in seeds in corpus/<target>/. Inputs
# libFuzzer finds interesting go to generated/<target>/, crashes to
# artifacts/<target>/ (both ignored by git). Exits 1 if any target found
# something, 2 if the tools are missing. Installs nothing.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 30 seconds, every target)
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-30}"
shift || true
all_targets=(session_jws jwks_document capability_json policy_toml broker_frame token_params authjs_cookie cookie_chunks session_answer introspection_answer expiry_text supabase_cookie subscription_filter)
targets=("${@:-${all_targets[@]}}")

if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: fuzz/run.sh [SECONDS] [TARGET...]  (targets: ${all_targets[*]})" >&2
    exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "a nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is needed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# Build against the versions the server ships with (the fuzz crate is its own
# workspace, so it would otherwise resolve afresh).
cp ../Cargo.lock Cargo.lock
cargo +nightly fuzz build

failed=()
for target in "${targets[@]}"; do
    mkdir -p "generated/$target" "artifacts/$target"
    log="generated/$target.log"
    echo "== $target: ${seconds}s"
    # -timeout: an input that takes 10 s is a finding (a client could stall a worker).
    if cargo +nightly fuzz run "$target" "generated/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
        echo "   ok: ${runs:-?} runs, $(( ${runs:-0} / seconds )) runs/s, no finding"
    else
        failed+=("$target")
        echo "   FINDING (log: fuzz/$log, input: fuzz/artifacts/$target/)"
        grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -n 8 | sed 's/^/   /'
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "findings in: ${failed[*]}" >&2
    exit 1
fi
echo "no findings"
