#!/usr/bin/env bash
# uturn's listener receive buffer under bursts: the same relay load against
# uturn with net.core.rmem_max at the kernel's default (212992, so uturn's
# 4 MiB request is cut down) and at 4194304 (the request goes through),
# alternated for ROUNDS rounds. tuning/README.md reports a run.
#
# Needs root: it writes net.core.rmem_max, and puts the value it found back
# on every exit (normal end, error, Ctrl-C). Loopback only; every process it
# starts is bounded by `timeout`.
#
#   cargo build --release --workspace
#   scripts/rcvbuf-burst.sh
#   ROUNDS=5 RATE=150k BATCH=256 scripts/rcvbuf-burst.sh
#
# Environment (all optional):
#   ROUNDS     rounds (each runs every value once)        (default 3)
#   VALUES     net.core.rmem_max values to alternate      (default "212992 4194304")
#   RATE       offered packets/s, or max                  (default max)
#   BATCH      datagrams per sendmmsg burst, 1-1024       (default 32)
#   DURATION   seconds per run                            (default 4)
#   BACKEND    uturn's --io-backend: uring or syscall     (default uring)
#   PORT       uturn's listen port on 127.0.0.1           (default 34790)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
VALUES=${VALUES:-"212992 4194304"}
RATE=${RATE:-max}
BATCH=${BATCH:-32}
DURATION=${DURATION:-4}
BACKEND=${BACKEND:-uring}
PORT=${PORT:-34790}
uturn=target/release/uturn
lg=target/release/uturn-loadgen
key=/proc/sys/net/core/rmem_max

for b in "$uturn" "$lg"; do
    [ -x "$b" ] || { echo "$b missing: cargo build --release --workspace" >&2; exit 2; }
done
[ -w "$key" ] || { echo "cannot write $key: run as root" >&2; exit 2; }

saved=$(cat "$key")
tmp=$(mktemp -d)
server=
restore() {
    if [ -n "$server" ]; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    echo "$saved" > "$key"
    echo "net.core.rmem_max restored to $(cat "$key")" >&2
    rm -rf "$tmp"
}
trap restore EXIT
trap 'exit 130' INT TERM

echo "net.core.rmem_max was $saved; rmem_default $(cat /proc/sys/net/core/rmem_default)" >&2
echo "uturn: --workers 1 --io-backend $BACKEND on core 0; generator on core 1;" \
    "relay c2p, 100 flows x 120 B, rate $RATE, batch $BATCH, ${DURATION}s" >&2
printf '%-5s %-9s %-12s %-11s %-13s %-8s %-12s %s\n' \
    round rmem_max listener_buf offered_pps delivered_pps loss_% socket_drops load1
for round in $(seq "$ROUNDS"); do
    for value in $VALUES; do
        echo "$value" > "$key"
        load1=$(cut -d' ' -f1 /proc/loadavg)
        timeout $((DURATION + 30)) taskset -c 0 "$uturn" --listen "127.0.0.1:$PORT" \
            --workers 1 --io-backend "$BACKEND" --realm lab --rest-secret bench \
            --allow-peer 127.0.0.0/8 --log-level info >"$tmp/out" 2>"$tmp/err" &
        server=$!
        for _ in $(seq 100); do
            grep -q '^uturn: ready' "$tmp/out" 2>/dev/null && break
            sleep 0.1
        done
        grep -q '^uturn: ready' "$tmp/out" || { cat "$tmp/err" >&2; exit 1; }
        # uturn logs what the kernel granted when it is less than it asked for;
        # getsockopt reports twice the capped request (the kernel's bookkeeping).
        granted=$(grep -o 'granted=[0-9]*' "$tmp/err" | head -n 1 | cut -d= -f2 || true)
        timeout $((DURATION + 30)) "$lg" --cpu 1 --json relay --server "127.0.0.1:$PORT" \
            --rest-secret bench --flows 100 --payload 120 --direction c2p \
            --rate "$RATE" --batch "$BATCH" --duration "$DURATION" >"$tmp/run.json"
        kill -TERM "$server"
        wait "$server" || true
        server=
        python3 - "$tmp/run.json" "$round" "$value" "${granted:-8388608}" "$load1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<5} {sys.argv[3]:<9} {sys.argv[4]:<12} {r['offered_pps']:<11.0f} "
      f"{r['delivered_pps']:<13.0f} {100 * r['loss_ratio']:<8.2f} "
      f"{r['server_socket_drops']!s:<12} {sys.argv[5]}")
EOF
    done
done
