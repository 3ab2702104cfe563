#!/usr/bin/env bash
# Legitimate allocation flows beside a 50 000/s flood of unauthenticated
# Allocates from 5 000 sources (10/s each, under the 20/s per-source limit),
# two builds of uturn alternating (e.g. rate limiter with 4 096 and 65 536
# slots). uturn --workers 1 on core 0, both generators on core 1.
# Usage: ab2.sh UTURN_A UTURN_B UTURN_LOADGEN
set -u
A=$1 B=$2 L=$3
for round in 1 2 3; do
  for bin in "$A" "$B"; do
    taskset -c 0 "$bin" --listen 127.0.0.1:34786 --relay-ip 127.0.0.1 --realm flood.test \
      --user alice:pw --allow-peer 127.0.0.0/8 --workers 1 --drain-timeout 0 \
      --metrics 127.0.0.1:34787 > /dev/null 2>&1 &
    UP=$!; sleep 0.5
    "$L" --cpu 1 flood --server 127.0.0.1:34786 --sources 5000 --rate 50000 --duration 7 > /dev/null 2>&1 &
    FP=$!; sleep 1
    r=$("$L" --cpu 1 allocate --server 127.0.0.1:34786 --user alice:pw --concurrency 8 --duration 4 --json)
    wait $FP
    d=$(curl -s 127.0.0.1:34787/metrics | grep 'reason="rate_limited"' | awk '{print $2}')
    kill -TERM $UP; wait $UP
    echo "$r" | python3 -c "import json,sys; a=json.load(sys.stdin); print(f'$bin round=$round flows/s={a[\"flows_per_sec\"]:.0f} timeouts={a[\"timeouts\"]} retransmits={a[\"retransmits\"]} rate_limited_drops=$d')"
  done
done
