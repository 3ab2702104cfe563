#!/usr/bin/env bash
# TURN over DTLS (RFC 7350): client flows per server CPU-second, uturn and
# coturn's turnserver side by side, alternating in rounds on loopback.
# The driver is coturn's own client, `turnutils_uclient -S` (DTLS over
# UDP): CLIENTS clients, each a DTLS handshake, an Allocate (with its 401
# round), a permission and one Send indication to an echoing
# `turnutils_peer`, whose echo must come back. A flow is a client whose
# echo came back (uclient's tot_recv_msgs); uturn's own count of DTLS
# allocations is reported beside it. The server runs
# on core RELAY_CPU (one worker / relay thread), uclient on GEN_CPU. The
# server's CPU time (/proc/PID/stat) is read before and after each run.
#
#   cargo build --release && tuning/dtls/bench.sh
#
# uclient picks DTLS 1.0 or 1.2 at random for each connection; uturn
# refuses 1.0 (TLS 1.2 and later only), and uclient tries again, so uturn
# pays for the refused handshakes too. coturn accepts both.
#
# Environment: ROUNDS (3), CLIENTS (100), RELAY_CPU (0), GEN_CPU (1),
# OUT (tuning/results/dtls/<UTC time>.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-100}
RELAY_CPU=${RELAY_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
TARGET=${CARGO_TARGET_DIR:-target}
UTURN=$TARGET/release/uturn
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-tuning/results/dtls/$stamp.md}
mkdir -p "$(dirname "$OUT")"
# $work, cleanup on exit (of $pid and $peer), free_udp_port, free_tcp_port.
source tuning/lib.sh
mport=""
cpu_secs() { awk -v t="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); split($0, f, " "); print (f[12] + f[13]) / t}' "/proc/$1/stat"; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
peer_port=$(free_udp_port)
taskset -c "$GEN_CPU" turnutils_peer -L 127.0.0.1 -p "$peer_port" >/dev/null 2>&1 &
peer=$!

start() { # system port
  local sys=$1 port=$2
  # A fresh log: the last run's "ready" line must not count.
  : >"$work/out"
  case $sys in
    uturn)
      mport=$(free_tcp_port)
      printf '[quotas]\nallocations_per_user = 100000\n' >"$work/u.toml"
      taskset -c "$RELAY_CPU" "$UTURN" --config "$work/u.toml" --realm lab --user alice:secret --allow-peer 127.0.0.0/8 \
        --listen "127.0.0.1:$(free_udp_port)" --listen-dtls "127.0.0.1:$port" --relay-ip 127.0.0.1 \
        --metrics "127.0.0.1:$mport" \
        --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --workers 1 \
        >"$work/out" 2>"$work/err" &
      pid=$!
      for _ in $(seq 100); do grep -q '^uturn: ready' "$work/out" 2>/dev/null && return; sleep 0.1; done
      echo "uturn did not start: $(tail -3 "$work/err")" >&2; exit 1 ;;
    coturn)
      taskset -c "$RELAY_CPU" turnserver -n --no-cli --relay-threads 1 --no-tcp --no-tls \
        --lt-cred-mech --allow-loopback-peers --user alice:secret --realm lab \
        --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 --listening-port "$(free_udp_port)" \
        --tls-listening-port "$port" --cert "$work/cert.pem" --pkey "$work/key.pem" \
        --min-port 43000 --max-port 43999 --db "$work/coturn.db" --pidfile "$work/coturn.pid" \
        --log-file "$work/coturn.log" --simple-log >/dev/null 2>&1 &
      pid=$!
      sleep 1.5 ;;
  esac
}

declare -A rate
{
  echo "# TURN over DTLS: client flows per server CPU-second ($stamp)"
  echo
  echo "$(nproc) cores, $(uname -r), coturn $(dpkg-query -W -f='${Version}' coturn 2>/dev/null); rounds $ROUNDS; $CLIENTS uclient clients;"
  echo "server on core $RELAY_CPU, uclient on core $GEN_CPU. Each run:"
  echo "\`turnutils_uclient -S -s -m $CLIENTS -n 1 -l 120 -u alice -w secret -e 127.0.0.1 -r PEER -p PORT 127.0.0.1\`"
  echo
  echo "| round | system | flows | DTLS allocations (uturn's count) | server CPU s | flows per CPU-s | uclient wall s |"
  echo "|---|---|---|---|---|---|---|"
} >"$OUT"
for r in $(seq "$ROUNDS"); do
  for sys in uturn coturn; do
    port=$(free_udp_port)
    start "$sys" "$port"
    before=$(cpu_secs "$pid")
    t0=$(date +%s.%N)
    taskset -c "$GEN_CPU" timeout 120 turnutils_uclient -S -s -m "$CLIENTS" -n 1 -l 120 \
      -u alice -w secret -e 127.0.0.1 -r "$peer_port" -p "$port" 127.0.0.1 >"$work/uc" 2>&1 || true
    t1=$(date +%s.%N)
    after=$(cpu_secs "$pid")
    flows=$(sed -n 's/.*tot_recv_msgs=\([0-9]*\).*/\1/p' "$work/uc" | tail -1)
    flows=${flows:-0}
    allocs=-
    if [ "$sys" = uturn ]; then
      allocs=$( (curl -s "http://127.0.0.1:$mport/metrics" || true) |
        awk '/^uturn_allocations_created_total\{transport="dtls"\}/ {print $2}')
    fi
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
    cpu=$(awk -v a="$before" -v b="$after" 'BEGIN {printf "%.2f", b - a}')
    per=$(awk -v n="$flows" -v c="$cpu" 'BEGIN {if (c > 0) printf "%.0f", n / c; else print "-"}')
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$sys" "$flows" "$allocs" "$cpu" "$per" "$wall" | tee -a "$OUT"
    rate[$sys]+="$per "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
{
  echo
  echo "Medians: uturn $(median <<<"${rate[uturn]}") and coturn $(median <<<"${rate[coturn]}") client flows per server CPU-second."
} | tee -a "$OUT"
echo "written to $OUT"
