#!/usr/bin/env bash
# CI step for the fuzz targets (see fuzz/README.md): installs cargo-fuzz if
# it is missing, builds every target with the default sanitizer (address)
# and debug assertions, then runs each for FUZZ_SECONDS (20) on its
# committed seeds. A crash, panic or failed assertion fails the step; the
# input that caused it is left in fuzz/artifacts/<target>/.
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept
# the -Z sanitizer flags cargo fuzz passes.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
# A target directory of its own, so that local runs with other flags
# (`--sanitizer none`) are not rebuilt by this step and the other way round.
TARGET_DIR=fuzz/target/ci

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

# The fuzz crate is outside the root workspace, so `cargo fmt --all` skips it.
(cd fuzz && cargo fmt -- --check)

targets=$(cargo fuzz list)
echo "targets: $(echo $targets)"
# 16 codegen units: a much shorter build (it is cold on every CI run) for
# slightly slower targets, which matters little in 20-second runs.
BUILD_FLAGS=(-O -a --codegen-units 16 --target-dir "$TARGET_DIR")
cargo fuzz build "${BUILD_FLAGS[@]}"

for t in $targets; do
  # New inputs go to a scratch directory; the committed seeds stay as they are.
  scratch=$(mktemp -d)
  echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
  if ! cargo fuzz run "${BUILD_FLAGS[@]}" "$t" "$scratch" "fuzz/seeds/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 2>"$scratch.log"; then
    tail -n 60 "$scratch.log"
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/ (see fuzz/README.md)"
    exit 1
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units)' "$scratch.log" || true
  rm -rf "$scratch" "$scratch.log"
done
echo "fuzz: every target ran ${SECONDS_PER_TARGET}s without a crash"
