#!/usr/bin/env bash
# Legitimate allocation flows alone and beside floods of 50 000/s and (as fast
# as one generator thread sends) from 5 000 sources, two rounds.
# uturn --workers 1 on core 0, both generators on core 1.
# Usage: beside.sh UTURN UTURN_LOADGEN
set -u
U=$1 L=$2
taskset -c 0 "$U" --listen 127.0.0.1:34783 --relay-ip 127.0.0.1 --realm flood.test --user alice:pw \
  --allow-peer 127.0.0.0/8 --workers 1 --drain-timeout 0 > /dev/null 2>&1 &
UP=$!
sleep 0.5
for round in 1 2; do
  for rate in none 50000 0; do
    if [ "$rate" != none ]; then
      "$L" --cpu 1 flood --server 127.0.0.1:34783 --sources 5000 --rate $rate --duration 8 --server-pid $UP > /tmp/flood.$$ 2>&1 &
      FP=$!; sleep 1
    fi
    r=$("$L" --cpu 1 allocate --server 127.0.0.1:34783 --user alice:pw --concurrency 8 --duration 5 2>&1 | grep -E "complete flows|timeouts" | tr -s ' ' | tr '\n' ';')
    if [ "$rate" != none ]; then wait $FP; f=$(grep -E "sent|401|server CPU" /tmp/flood.$$ | tr -s ' ' | tr '\n' ';'); else f="no flood"; fi
    echo "round $round flood=$rate: $r $f"
  done
done
rm -f /tmp/flood.$$
kill -TERM $UP; wait $UP
