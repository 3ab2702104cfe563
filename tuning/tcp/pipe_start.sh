#!/usr/bin/env bash
# How long an RFC 6062 pipe takes to start: from the ConnectionBind sent to
# a first byte (sent after the answer) at the peer, as `uturn-loadgen
# tcp-relay` reports it (pipe_start_ms). Compares uturn binaries side by
# side, alternating in rounds, on every io backend; two workers, so that
# data connections land on the worker that owns their allocation or on the
# other one.
#
#   BINARIES="old=/path/to/old/uturn new=target/release/uturn" tuning/tcp/pipe_start.sh
#
# Environment: BINARIES (name=path ..., default new=$TARGET/release/uturn),
# BACKENDS ("uring uring-epoll syscall"), ROUNDS (3), PIPES (32),
# OUT (tuning/results/tcp/<UTC time>-pipe-start.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
LOADGEN=$TARGET/release/uturn-loadgen
BINARIES=${BINARIES:-"new=$TARGET/release/uturn"}
BACKENDS=${BACKENDS:-"uring uring-epoll syscall"}
ROUNDS=${ROUNDS:-3}
PIPES=${PIPES:-32}
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-tuning/results/tcp/$stamp-pipe-start.md}
mkdir -p "$(dirname "$OUT")"
# $work, cleanup on exit (of $pid), free_tcp_port.
source tuning/lib.sh

{
  echo "# RFC 6062 pipe start ($stamp)"
  echo
  echo "\`uturn-loadgen tcp-relay --pipes $PIPES --per-allocation 4 --bytes 4096 --direction c2p\`"
  echo "against uturn with two workers; pipe_start_ms: ConnectionBind sent until the first bytes"
  echo "after the answer reached the peer. Binaries: $BINARIES. Kernel $(uname -r)."
  echo
  echo "| round | binary | backend | median ms | max ms |"
  echo "|---|---|---|---|---|"
} >"$OUT"

for round in $(seq "$ROUNDS"); do
  for backend in $BACKENDS; do
    for b in $BINARIES; do
      name=${b%%=*}
      bin=${b#*=}
      case $backend in
        uring) flags=(--io-backend uring) ;;
        uring-epoll) flags=(--io-backend uring --io-streams epoll) ;;
        syscall) flags=(--io-backend syscall) ;;
        *) echo "unknown backend $backend" >&2; exit 2 ;;
      esac
      port=$(free_tcp_port)
      : >"$work/out"
      "$bin" --realm lab --user alice:secret --allow-peer 127.0.0.0/8 \
        --listen "127.0.0.1:$port" --listen-tcp "127.0.0.1:$port" --relay-ip 127.0.0.1 \
        --workers 2 "${flags[@]}" >"$work/out" 2>"$work/err" &
      pid=$!
      for _ in $(seq 100); do grep -q '^uturn: ready' "$work/out" 2>/dev/null && break; sleep 0.1; done
      json=$("$LOADGEN" --json tcp-relay --server "127.0.0.1:$port" --user alice:secret \
        --pipes "$PIPES" --per-allocation 4 --bytes 4096 --direction c2p --timeout-secs 30)
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
      p50=$(echo "$json" | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["pipe_start_ms"]["p50"])')
      max=$(echo "$json" | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["pipe_start_ms"]["max"])')
      echo "| $round | $name | $backend | $p50 | $max |" >>"$OUT"
      echo "round $round $name $backend: median $p50 ms, max $max ms"
    done
  done
done
echo "written: $OUT"
