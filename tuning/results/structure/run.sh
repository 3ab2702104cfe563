#!/bin/sh
# Issue 10 (structure): the server before the crate split and after, side by
# side in one alternating run, on the two standard shapes.
#   run.sh BEFORE_BIN   (after = target/release/uturn of this checkout)
set -eu
BEFORE=$1
HERE=$(dirname "$0")
LG=target/release/uturn-loadgen
"$LG" --cpu 1 compare --systems uturn,uturn-baseline --baseline-bin "$BEFORE" \
    --uturn-bin target/release/uturn --sut-cpu 0 --rounds 5 --duration 5 \
    --scenario relay --flows 100 --payload 120 --rate max \
    --out "$HERE/compare-relay-100x120.md"
"$LG" --cpu 1 compare --systems uturn,uturn-baseline --baseline-bin "$BEFORE" \
    --uturn-bin target/release/uturn --sut-cpu 0 --rounds 5 --duration 5 \
    --scenario allocate \
    --out "$HERE/compare-allocate.md"
