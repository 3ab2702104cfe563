#!/usr/bin/env bash
# Side-by-side benchmark of uturn, the kernel floor and coturn (when Debian's
# `coturn` package is installed), as BENCHMARKING.md describes: three
# scenarios, each alternated A B C for ROUNDS rounds, one markdown report each
# in tuning/results/.
#
#   scripts/compare.sh            # 3 rounds
#   ROUNDS=5 RATE=150k DURATION=10 scripts/compare.sh
#
# Environment (all optional):
#   ROUNDS    rounds per scenario                          (default 3)
#   RATE      offered packets/s for the relay runs, or max (default max: saturation)
#   DURATION  seconds per run                              (default 5)
#   SUT_CPU   core of the system under test                (default 0)
#   GEN_CPUS  cores of the generator, e.g. 1 or 1-3        (default 1)
#   GSO       1 to send with UDP GSO                       (default off)
#   OUT_DIR   where the reports go                         (default tuning/results)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-max}
DURATION=${DURATION:-5}
SUT_CPU=${SUT_CPU:-0}
GEN_CPUS=${GEN_CPUS:-1}
OUT_DIR=${OUT_DIR:-tuning/results}
gso=()
if [ "${GSO:-0}" = 1 ]; then gso=(--gso); fi

cargo build --release --bin uturn
cargo build --release -p uturn-loadgen
lg=target/release/uturn-loadgen
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$OUT_DIR"

run() {
    local name=$1
    shift
    echo "== $name"
    "$lg" --cpu "$GEN_CPUS" compare --rounds "$ROUNDS" --sut-cpu "$SUT_CPU" \
        --uturn-bin target/release/uturn --duration "$DURATION" \
        --out "$OUT_DIR/compare-$stamp-$name.md" "$@"
}

run relay-100x120 --scenario relay --flows 100 --payload 120 --rate "$RATE" "${gso[@]}"
run relay-1x1200 --scenario relay --flows 1 --payload 1200 --rate "$RATE" "${gso[@]}"
run allocate --scenario allocate
