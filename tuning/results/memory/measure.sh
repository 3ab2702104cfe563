#!/bin/sh
# The memory tables of README.md: before and after binaries side by side,
# both io backends, one permission and permission + channel, with the heap
# on 4 KiB pages (MIMALLOC_ALLOW_THP=0: byte-level figures) and as it runs
# by default (transparent huge pages: RSS in 2 MiB steps).
#   measure.sh BEFORE_BIN AFTER_BIN LOADGEN_BIN > out.txt
set -u
BEFORE=$1 AFTER=$2 LOADGEN=$3
HERE=$(dirname "$0")
for thp in 0 1; do
    for backend in uring syscall; do
        for shape in "" "--channel"; do
            for bin in "$BEFORE" "$AFTER"; do
                echo "## MIMALLOC_ALLOW_THP=$thp backend=$backend ${shape:-one-permission}"
                MIMALLOC_ALLOW_THP=$thp "$HERE/hold.sh" "$bin" "$LOADGEN" "$backend" $shape 2>&1 \
                    | grep -v '^hold: '
            done
        done
    done
done
