#!/usr/bin/env bash
# RFC 6062 TCP relay throughput, side by side: uturn with splice(2), uturn
# copying through its own buffers, and coturn's turnserver, alternating in
# rounds on loopback. Each server gets core RELAY_CPU (one worker / relay
# thread), the load generator core GEN_CPU. Reports Gbit/s and the
# server's CPU seconds per GB relayed (medians of the rounds).
#
#   cargo build --release --workspace && tuning/tcp/bench.sh
#
# A run that does not finish within TIMEOUT seconds (coturn stalls with
# bulk bytes both ways at once, see tuning/results/tcp/README.md) is
# reported as stalled and left out of the medians.
#
# Environment: ROUNDS (3), PIPES (4), BYTES per pipe and direction
# (268435456), DIRECTIONS ("c2p p2c both"), SYSTEMS ("splice copy coturn"),
# TIMEOUT (60), RELAY_CPU (0), GEN_CPU (1),
# OUT (tuning/results/tcp/<UTC time>.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
PIPES=${PIPES:-4}
BYTES=${BYTES:-268435456}
DIRECTIONS=${DIRECTIONS:-"c2p p2c both"}
SYSTEMS=${SYSTEMS:-"splice copy coturn"}
TIMEOUT=${TIMEOUT:-60}
RELAY_CPU=${RELAY_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
TARGET=${CARGO_TARGET_DIR:-target}
UTURN=$TARGET/release/uturn
LOADGEN=$TARGET/release/uturn-loadgen
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-tuning/results/tcp/$stamp.md}
mkdir -p "$(dirname "$OUT")"
# $work, cleanup on exit (of $pid), free_tcp_port.
source tuning/lib.sh

start() { # system port
  local sys=$1 port=$2
  # A fresh log: the last run's "ready" line must not count.
  : >"$work/out"
  case $sys in
    splice|copy)
      printf '[tcp]\nrelay_splice = %s\n' "$([ "$sys" = splice ] && echo true || echo false)" >"$work/u.toml"
      taskset -c "$RELAY_CPU" "$UTURN" --config "$work/u.toml" --realm lab --user alice:secret \
        --allow-peer 127.0.0.0/8 --listen "127.0.0.1:$port" --listen-tcp "127.0.0.1:$port" \
        --relay-ip 127.0.0.1 --workers 1 >"$work/out" 2>"$work/err" &
      pid=$!
      for _ in $(seq 100); do grep -q '^uturn: ready' "$work/out" 2>/dev/null && return; sleep 0.1; done
      echo "uturn did not start: $(tail -3 "$work/err")" >&2; exit 1 ;;
    coturn)
      taskset -c "$RELAY_CPU" turnserver -n --no-cli --no-dtls --no-tls --relay-threads 1 \
        --lt-cred-mech --allow-loopback-peers --user alice:secret --realm lab \
        --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$port" \
        --min-port 42000 --max-port 42999 --db "$work/coturn.db" --pidfile "$work/coturn.pid" \
        --log-file "$work/coturn.log" --simple-log >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 100); do
        if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.1
      done
      echo "turnserver did not start" >&2; exit 1 ;;
  esac
}

declare -A gbit cpu
{
  echo "# RFC 6062 TCP relay throughput ($stamp)"
  echo
  echo "$(nproc) cores, $(uname -r), $(turnserver --version 2>/dev/null | head -1 || echo coturn);"
  echo "rounds $ROUNDS, pipes $PIPES, $BYTES bytes per pipe and direction;"
  echo "servers on core $RELAY_CPU (one worker / relay thread), generator on core $GEN_CPU."
  echo "Each run: \`uturn-loadgen --json tcp-relay --server ADDR --user alice:secret --pipes $PIPES"
  echo "--per-allocation $PIPES --bytes $BYTES --direction D --server-pid PID --timeout-secs $TIMEOUT\`."
  echo
  echo "| round | direction | system | Gbit/s | server CPU s | server CPU s per GB |"
  echo "|---|---|---|---|---|---|"
} >"$OUT"
for r in $(seq "$ROUNDS"); do
  for dir in $DIRECTIONS; do
    for sys in $SYSTEMS; do
      port=$(free_tcp_port)
      start "$sys" "$port"
      json=$(taskset -c "$GEN_CPU" "$LOADGEN" --json tcp-relay --server "127.0.0.1:$port" \
        --user alice:secret --pipes "$PIPES" --per-allocation "$PIPES" --bytes "$BYTES" \
        --direction "$dir" --server-pid "$pid" --timeout-secs "$TIMEOUT" 2>"$work/lg.err") || json=""
      kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
      if [ -z "$json" ]; then
        printf '| %s | %s | %s | stalled: %s | | |\n' "$r" "$dir" "$sys" "$(tail -1 "$work/lg.err")" | tee -a "$OUT"
        continue
      fi
      g=$(jq -r '.gbit_per_sec' <<<"$json"); s=$(jq -r '.server_cpu_secs' <<<"$json")
      per=$(jq -r '.server_cpu_secs_per_gb' <<<"$json")
      printf '| %s | %s | %s | %.2f | %.2f | %.3f |\n' "$r" "$dir" "$sys" "$g" "$s" "$per" | tee -a "$OUT"
      gbit[$dir/$sys]+="$g "; cpu[$dir/$sys]+="$per "
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.3f\n", a[int((NR+1)/2)]; else print "-"}'; }
{
  echo
  echo "Medians:"
  echo
  echo "| direction | system | Gbit/s | server CPU s per GB |"
  echo "|---|---|---|---|"
  for dir in $DIRECTIONS; do
    for sys in $SYSTEMS; do
      printf '| %s | %s | %s | %s |\n' "$dir" "$sys" "$(median <<<"${gbit[$dir/$sys]:-}")" "$(median <<<"${cpu[$dir/$sys]:-}")"
    done
  done
} | tee -a "$OUT"
echo "written to $OUT"
