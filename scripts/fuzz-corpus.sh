#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# A short libFuzzer run (cargo fuzz, nightly) of each uat-sim parser from its seed corpus.
# FUZZ_SECONDS (default 20) per target. Skipped, saying so, without nightly or cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/../tools/uat-sim/fuzz"
secs=${FUZZ_SECONDS:-20}
if ! rustup toolchain list 2>/dev/null | grep -q nightly || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz-corpus: no nightly toolchain or cargo-fuzz; skipped (the proptest suites still run)"
    exit 0
fi
for t in trace dtb machine_json; do
    mkdir -p "corpus/$t"
    # A private copy: the run adds inputs to the corpus directory it is given.
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/"
    cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536
    rm -rf "$work"
done
