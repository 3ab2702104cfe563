#!/usr/bin/env bash
# What one worker on one core absorbs: uturn --workers 1 pinned to core 0,
# the flood generator pinned to core 1, 10 s, default limits (20 replies/s
# per source), 5 000 sources as fast as one generator thread sends.
# Usage: capacity.sh UTURN UTURN_LOADGEN
set -u
U=$1 L=$2
taskset -c 0 "$U" --listen 127.0.0.1:34782 --relay-ip 127.0.0.1 --realm flood.test --user alice:pw \
  --workers 1 --drain-timeout 0 > /dev/null 2>&1 &
UP=$!
sleep 0.5
"$L" --cpu 1 flood --server 127.0.0.1:34782 --sources 5000 --duration 10 --server-pid $UP 2>&1 | tail -6
kill -TERM $UP; wait $UP
