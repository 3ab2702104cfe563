#!/bin/sh
# Memory per idle allocation: starts uturn (one worker, pinned to core 0) with
# a configuration that lifts the allocation quotas and the per-source limit on
# unauthenticated replies, holds 1 000 then 10 000 allocations with
# `uturn-loadgen hold` (pinned to core 1), stops uturn by its PID.
#   hold.sh UTURN_BIN LOADGEN_BIN BACKEND [extra hold flags...]
set -eu
UTURN=$1 LOADGEN=$2 BACKEND=$3
shift 3
DIR=$(mktemp -d /tmp/uturn-hold.XXXXXX)
cat > "$DIR/uturn.toml" <<'TOML'
[quotas]
allocations_per_user = 100000
total_allocations = 100000
[rate_limit]
unauth_per_second = 1000000
unauth_burst = 1000000
TOML
taskset -c 0 "$UTURN" --config "$DIR/uturn.toml" --listen 127.0.0.1:34790 \
    --relay-ip 127.0.0.1 --relay-ports 20000-31999 --user lg:lgpw --realm uturn.test \
    --allow-peer 127.0.0.0/8 --workers 1 --io-backend "$BACKEND" --drain-timeout 0 \
    > "$DIR/uturn.log" 2>&1 &
PID=$!
i=0
until grep -q '^uturn: ready' "$DIR/uturn.log"; do
    i=$((i + 1)); [ $i -lt 100 ] || { kill "$PID"; cat "$DIR/uturn.log"; exit 1; }
    sleep 0.1
done
echo "# $UTURN --io-backend $BACKEND (pid $PID)"
"$LOADGEN" --cpu 1 hold --server 127.0.0.1:34790 --user lg:lgpw \
    --allocations 1000,10000 --server-pid "$PID" "$@" || true
kill "$PID"
wait "$PID" || true
rm -rf "$DIR"
