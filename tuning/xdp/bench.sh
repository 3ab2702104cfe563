#!/usr/bin/env bash
# The floor, uturn on io_uring and uturn with XDP, side by side on one
# three-namespace veth topology (topology.sh), alternating, N rounds; then
# the capacity of each with the relay's receive work pinned to its core.
# Writes a markdown report (tuning/results/xdp/<date>.md by default).
# See tuning/xdp/README.md for what is measured and how to read it.
#
# Needs root, iproute2, ethtool, clang (topology.sh), jq, and release builds
# of uturn and uturn-loadgen (cargo build --release --workspace).
#
# Environment (defaults in brackets):
#   ROUNDS [3]            rounds of every shape and system (A B C A B C ...)
#   DURATION [5]          seconds of sending per run
#   RATE [50k]            offered packets per second of the fixed-rate runs
#   SYSTEMS [floor uring xdp]
#   SHAPES [100x120 1x1200]   FLOWSxPAYLOAD
#   DIRECTIONS [c2p both]
#   GSO [off on]          the generator's sends: sendmmsg, or UDP GSO (--gso)
#   CAPACITY [1]          0: skip the capacity runs
#   CAPACITY_SHAPES [100x120]  CAPACITY_DIRECTIONS [c2p both]  CAPACITY_GSO [on]
#   CAPACITY_RATES [100k 200k 300k 400k max]   offered rates of the capacity runs
#   RELAY_CPU [0] GEN_CPU [1]   the relay's core and the generator's
#   PREFIX [xb<n>]        topology prefix (namespaces PREFIXc, PREFIXr, PREFIXp)
#   OUT [tuning/results/xdp/<UTC date>.md]
#   BIN_DIR [${CARGO_TARGET_DIR:-target}/release]; UTURN, LOADGEN: the binaries
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}
UTURN=${UTURN:-$bin_dir/uturn}
LOADGEN=${LOADGEN:-$bin_dir/uturn-loadgen}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
RATE=${RATE:-50k}
SYSTEMS=${SYSTEMS:-floor uring xdp}
SHAPES=${SHAPES:-100x120 1x1200}
DIRECTIONS=${DIRECTIONS:-c2p both}
GSO=${GSO:-off on}
CAPACITY=${CAPACITY:-1}
CAPACITY_SHAPES=${CAPACITY_SHAPES:-100x120}
CAPACITY_DIRECTIONS=${CAPACITY_DIRECTIONS:-c2p both}
CAPACITY_GSO=${CAPACITY_GSO:-on}
CAPACITY_RATES=${CAPACITY_RATES:-100k 200k 300k 400k max}
RELAY_CPU=${RELAY_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
PREFIX=${PREFIX:-xb$((RANDOM % 1000))}
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-$repo/tuning/results/xdp/$stamp.md}

PORT=3478
LISTEN=10.200.1.1
RELAY_IP=10.200.2.1
PEER_IP=10.200.2.2
HZ=$(getconf CLK_TCK)
NCPU=$(grep -c '^cpu[0-9]' /proc/stat)

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
command -v jq >/dev/null || die "needs jq"
[[ -x $UTURN ]] || die "no uturn binary at $UTURN (cargo build --release --workspace, or set UTURN)"
[[ -x $LOADGEN ]] || die "no uturn-loadgen binary at $LOADGEN (or set LOADGEN)"

work=$(mktemp -d)
rows=$work/rows.tsv # one line per run, see measure()
commands=$work/commands.txt
: >"$rows"
: >"$commands"
server_pid=""
server_job=""

# uturn's defaults, except the limits a load test from one address trips over
# (the same as `uturn-loadgen compare` uses).
config=$work/uturn.toml
cat >"$config" <<'EOF'
[quotas]
allocations_per_user = 100000
total_allocations = 100000
[rate_limit]
unauth_per_second = 1000000
unauth_burst = 1000000
EOF

stop_server() {
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    local i
    for i in $(seq 50); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
        say "pid $server_pid ignored SIGTERM for 5 s; SIGKILL"
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    wait "$server_job" 2>/dev/null || true
    server_pid=""
    server_job=""
}

cleanup() {
    stop_server
    "$here/topology.sh" down "$PREFIX" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

topology_up() {
    "$here/topology.sh" down "$PREFIX" >/dev/null
    env "$@" "$here/topology.sh" up "$PREFIX" | tee -a "$work/topology.txt" >&2
}

# The command line of SYSTEM, into the array `argv`.
server_argv() {
    case $1 in
        floor)
            argv=("$LOADGEN" floor --listen "$LISTEN:$PORT" --relay-ip "$RELAY_IP" --duration 3600)
            ;;
        uring | xdp)
            argv=("$UTURN" --config "$config" --listen "$LISTEN:$PORT" --relay-ip "$RELAY_IP"
                --relay-ports 40000-49999 --user lg:lgpw --realm uturn.bench
                --allow-peer 10.200.2.0/24 --workers 1 --drain-timeout 0 --log-level warn
                --io-backend uring)
            if [[ $1 == xdp ]]; then
                argv+=(--xdp required --xdp-interface rc --xdp-interface rp)
            fi
            ;;
        *) die "unknown system $1 (floor, uring, xdp)" ;;
    esac
}

# Starts SYSTEM in the relay namespace pinned to RELAY_CPU; sets server_pid
# (the server's own PID: ip netns exec, sh and taskset each execute the
# next), or returns 1 with the reason in server_error.
start_server() {
    local sys=$1 log=$work/server.log pidfile=$work/server.pid ready i argv
    server_argv "$sys"
    rm -f "$pidfile"
    echo "ip netns exec ${PREFIX}r taskset -c $RELAY_CPU ${argv[*]}" >>"$commands"
    ip netns exec "${PREFIX}r" sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$pidfile" \
        taskset -c "$RELAY_CPU" "${argv[@]}" >"$log" 2>&1 &
    server_job=$!
    [[ $sys == floor ]] && ready="floor: ready" || ready="uturn: ready"
    for i in $(seq 150); do
        if [[ -s $pidfile ]] && grep -qx "$ready" "$log"; then
            server_pid=$(cat "$pidfile")
            return 0
        fi
        if ! kill -0 "$server_job" 2>/dev/null; then
            wait "$server_job" 2>/dev/null || true
            server_job=""
            server_error=$(grep -i -m1 'error' "$log" || head -n1 "$log")
            server_error=${server_error:-exited without a word}
            return 1
        fi
        sleep 0.1
    done
    server_pid=$(cat "$pidfile" 2>/dev/null || echo "$server_job")
    server_error="not ready within 15 s: $(head -n1 "$log")"
    stop_server
    return 1
}

# utime + stime of PID, in clock ticks (fields 14 and 15 of /proc/PID/stat).
proc_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Busy CPU-seconds between two copies of /proc/stat over WALL seconds: for
# the whole machine and for each core, wall time minus idle, iowait and
# steal (what was not available to anyone is not counted as work, and no
# busy counter is summed). Prints "total cpu0 cpu1 ..." (the cores as a
# fraction of the wall time).
busy_between() {
    awk -v wall="$3" -v hz="$HZ" -v ncpu="$NCPU" '
        NR == FNR { if ($1 ~ /^cpu/) free[$1] = $5 + $6 + $9; next }
        $1 ~ /^cpu/ {
            f = ($5 + $6 + $9 - free[$1]) / hz
            if ($1 == "cpu") total = ncpu * wall - f
            else { b = (wall - f) / wall; if (b < 0) b = 0; if (b > 1) b = 1; cores = cores " " sprintf("%.2f", b) }
        }
        END { printf "%.4f%s\n", total, cores }' "$1" "$2"
}

# Dropped packets (rx + tx) of the four veth ends, "rc rp c0 p0": a full
# veth ring (a veth that sends into a full ring counts a tx drop), XDP
# refusals and the like, all lost before any socket.
veth_drops() {
    local ns_dev ns dev
    for ns_dev in "${PREFIX}r rc" "${PREFIX}r rp" "${PREFIX}c c0" "${PREFIX}p p0"; do
        read -r ns dev <<<"$ns_dev"
        ip -j -s -n "$ns" link show dev "$dev" |
            jq -r '.[0].stats64 | .rx.dropped + .tx.dropped'
    done | tr '\n' ' '
}

# One generator run against the running server; appends a row to $rows:
# kind round shape direction gso system status delivered delivered_pps
# loss offered_pps machine_busy_s wall_s gen_cpu_s relay_cpu_s cores note
measure() {
    local kind=$1 round=$2 shape=$3 dir=$4 gso=$5 sys=$6 rate=$7
    local flows=${shape%x*} payload=${shape#*x}
    local json=$work/gen.json err=$work/gen.err statf=$work/gen.stat
    local -a gen=("$LOADGEN" --json --cpu "$GEN_CPU" relay --server "$LISTEN:$PORT"
        --client-netns "${PREFIX}c" --peer-netns "${PREFIX}p" --peer-ip "$PEER_IP"
        --flows "$flows" --payload "$payload" --direction "$dir" --rate "$rate"
        --duration "$DURATION" --server-pid "$server_pid")
    if [[ $sys == floor ]]; then gen+=(--no-auth); else gen+=(--user lg:lgpw); fi
    [[ $gso == on ]] && gen+=(--gso)
    echo "${gen[*]}" >>"$commands"

    local t0 t1 r0 r1 status=ok sampler v0 v1
    v0=$(veth_drops)
    cat /proc/stat >"$work/stat0"
    r0=$(proc_ticks "$server_pid")
    t0=$(date +%s.%N)
    # Each core's load in the middle of the sending window (set-up and the
    # drain left out): from 0.5 s after the start for DURATION - 1 s.
    rm -f "$work/mid1"
    (
        sleep 0.5
        cat /proc/stat >"$work/mid0"
        date +%s.%N >"$work/mid0.t"
        sleep "$(awk -v d="$DURATION" 'BEGIN { print (d > 1.5 ? d - 1 : d / 3) }')"
        cat /proc/stat >"$work/mid1"
        date +%s.%N >"$work/mid1.t"
    ) &
    sampler=$!
    # The generator's CPU: its parent shell reads its own /proc/PID/stat
    # after waiting for it, where cutime + cstime are the generator's user
    # and system time, all threads, to the end.
    sh -c 'out=$1 err=$2 statf=$3; shift 3; "$@" >"$out" 2>"$err"; st=$?
        cat /proc/$$/stat >"$statf"; exit $st' sh "$json" "$err" "$statf" "${gen[@]}" ||
        status=failed
    t1=$(date +%s.%N)
    r1=$(proc_ticks "$server_pid" 2>/dev/null || echo "$r0")
    cat /proc/stat >"$work/stat1"
    v1=$(veth_drops)
    wait "$sampler" || true

    local wall busy total cores gen_cpu relay_cpu delivered pps loss offered limited note=""
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    busy=$(busy_between "$work/stat0" "$work/stat1" "$wall")
    total=${busy%% *}
    cores=""
    if [[ -s $work/mid1 ]]; then
        busy=$(busy_between "$work/mid0" "$work/mid1" \
            "$(awk -v a="$(cat "$work/mid0.t")" -v b="$(cat "$work/mid1.t")" 'BEGIN { print b - a }')")
        cores=$(echo "${busy#* }" | tr ' ' ',')
    fi
    gen_cpu=$(sed 's/.*) //' "$statf" | awk -v hz="$HZ" '{ printf "%.3f", ($14 + $15) / hz }')
    relay_cpu=$(awk -v a="$r0" -v b="$r1" -v hz="$HZ" 'BEGIN { printf "%.3f", (b - a) / hz }')
    if [[ $status == ok ]]; then
        local server_drops gen_drops
        read -r delivered pps loss offered limited server_drops gen_drops < <(jq -r \
            '[.delivered, .delivered_pps, .loss_ratio, .offered_pps, .generator_limited,
              .server_socket_drops, .generator_rx_drops] | @tsv' "$json")
        [[ $limited == true ]] && note="generator-limited; "
        # Where packets were lost: the relay's sockets, the generator's, the veth ends.
        note+=$(awk -v a="$v0" -v b="$v1" -v s="$server_drops" -v g="$gen_drops" 'BEGIN {
            split(a, x, " "); split(b, y, " "); split("rc rp c0 p0", n, " ")
            for (i = 1; i <= 4; i++) if (y[i] - x[i] > 0) v = v " " n[i] " " y[i] - x[i]
            if (s + g > 0 || v != "") printf "drops: server sockets %d, generator sockets %d, veth%s", s, g, (v == "" ? " 0" : v)
        }')
    else
        delivered=0 pps=0 loss=1 offered=0
        note=$(grep -m1 -i error "$err" || head -n1 "$err")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$kind" "$round" "$shape" "$dir" "$gso" "$sys" "$status" "$delivered" "$pps" "$loss" \
        "$offered" "$total" "$wall" "$gen_cpu" "$relay_cpu" "$cores" "$note" >>"$rows"
    say "$kind round $round $shape $dir gso=$gso $sys: $status, $(printf '%.0f' "$pps") delivered/s"
}

# A run of SYSTEM: a fresh server, one generator run, the server stopped.
run_one() {
    local kind=$1 round=$2 shape=$3 dir=$4 gso=$5 sys=$6 rate=$7
    if ! start_server "$sys"; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\tunavailable\t0\t0\t1\t0\t0\t0\t0\t0\t\t%s\n' \
            "$kind" "$round" "$shape" "$dir" "$gso" "$sys" "$server_error" >>"$rows"
        say "$sys: unavailable ($server_error)"
        return
    fi
    measure "$kind" "$round" "$shape" "$dir" "$gso" "$sys" "$rate"
    stop_server
    sleep 0.5
}

# ---------------------------------------------------------------------------
say "topology $PREFIX; binaries $UTURN, $LOADGEN; report $OUT"
echo "# fixed-rate runs: TX_CSUM=off PASS_XDP=1 topology.sh up $PREFIX" >"$work/topology.txt"
topology_up TX_CSUM=off PASS_XDP=1

# What the machine does without us (other tenants, the VM's own work).
cat /proc/stat >"$work/stat0"
t0=$(date +%s.%N)
sleep 2
t1=$(date +%s.%N)
cat /proc/stat >"$work/stat1"
background_wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
background=$(busy_between "$work/stat0" "$work/stat1" "$background_wall")

for round in $(seq "$ROUNDS"); do
    for shape in $SHAPES; do
        for dir in $DIRECTIONS; do
            for gso in $GSO; do
                for sys in $SYSTEMS; do
                    run_one rate "$round" "$shape" "$dir" "$gso" "$sys" "$RATE"
                done
            done
        done
    done
done

if [[ $CAPACITY == 1 ]]; then
    echo "# capacity runs: TX_CSUM=off PASS_XDP=1 THREADED_NAPI=$RELAY_CPU" \
        "THREADED_NAPI_ENDS=$GEN_CPU topology.sh up $PREFIX" >>"$work/topology.txt"
    topology_up TX_CSUM=off PASS_XDP=1 THREADED_NAPI="$RELAY_CPU" THREADED_NAPI_ENDS="$GEN_CPU"
    for shape in $CAPACITY_SHAPES; do
        for dir in $CAPACITY_DIRECTIONS; do
            for gso in $CAPACITY_GSO; do
                for rate in $CAPACITY_RATES; do
                    for sys in $SYSTEMS; do
                        run_one capacity "$rate" "$shape" "$dir" "$gso" "$sys" "$rate"
                    done
                done
            done
        done
    done
fi

# ---------------------------------------------------------------------------
# The report.
mkdir -p "$(dirname "$OUT")"
{
    echo "# XDP benchmark: floor, uturn (io_uring), uturn (XDP) across namespaces"
    echo
    echo "* date: $stamp"
    echo "* kernel: $(uname -r); CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n1), $NCPU cores"
    echo "* commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "* relay/forwarder on core $RELAY_CPU (taskset), generator on core $GEN_CPU (--cpu)"
    echo "* $ROUNDS round(s) of $DURATION s per run at $RATE packets/s; systems: $SYSTEMS"
    echo "* background load before the runs (nothing of ours running): $(echo "$background" |
        awk -v w="$background_wall" '{ printf "%.2f CPU-s/s", $1 / w }') (cores:$(echo "$background" | cut -d' ' -f2-))"
    echo
    echo "Topology (tuning/xdp/topology.sh):"
    echo
    echo '```'
    cat "$work/topology.txt"
    echo '```'
    echo
    echo "Per run: *machine µs/pkt* is the whole machine's busy CPU time (wall time × cores"
    echo "minus idle, iowait and steal in /proc/stat, over the generator's lifetime) per"
    echo "delivered packet; *gen* is the generator's own CPU (user + system, all threads, from"
    echo "/proc/PID/stat), *relay* the relay process's (/proc/PID/stat; XDP and softirq work is"
    echo "not in it). *cores*: each core's busy fraction (same formula) in the middle of the"
    echo "sending window, from 0.5 s after the generator started for DURATION − 1 s."
    awk -F'\t' '
        function us(cpu, n) { return n > 0 ? sprintf("%.2f", cpu / n * 1e6) : "-" }
        $1 == "rate" {
            if (!hdr++) {
                print ""
                print "## Fixed rate: every run"
                print ""
                print "| round | shape | dir | GSO | system | delivered/s | loss | machine µs/pkt | gen CPU s | relay CPU s | relay µs/pkt | cores | note |"
                print "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            }
            if ($7 == "unavailable") {
                printf "| %s | %s | %s | %s | %s | unavailable | | | | | | | %s |\n", $2, $3, $4, $5, $6, $17
                next
            }
            printf "| %s | %s | %s | %s | %s | %.0f | %.3f %% | %s | %.2f | %.2f | %s | %s | %s |\n",
                $2, $3, $4, $5, $6, $9, $10 * 100, us($12, $8), $14, $15, us($15, $8), $16, $17
        }' "$rows"
    # Medians over rounds, with the spread (min-max).
    awk -F'\t' '
        function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
        function med(list,   a, n) { n = split(list, a, " "); if (!n) return "-"; sort(a, n); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        function lo(list,   a, n) { n = split(list, a, " "); sort(a, n); return a[1] }
        function hi(list,   a, n) { n = split(list, a, " "); sort(a, n); return a[n] }
        $1 == "rate" {
            k = $3 " | " $4 " | " $5 " | " $6
            if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
            if ($7 == "ok" && $8 > 0) {
                pps[k] = pps[k] " " $9; mus[k] = mus[k] " " ($12 / $8 * 1e6)
                gen[k] = gen[k] " " ($14 / $13); rel[k] = rel[k] " " ($15 / $8 * 1e6)
            } else if ($7 == "unavailable") why[k] = $17
        }
        END {
            if (!nk) exit
            print ""
            print "## Fixed rate: medians over rounds (min–max)"
            print ""
            print "| shape | dir | GSO | system | delivered/s | machine µs/pkt | gen CPU (of a core) | relay µs/pkt |"
            print "|---|---|---|---|---|---|---|---|"
            for (i = 1; i <= nk; i++) {
                k = order[i]
                if (pps[k] == "") { printf "| %s | unavailable (%s) | | | |\n", k, why[k]; continue }
                printf "| %s | %.0f (%.0f–%.0f) | %.2f (%.2f–%.2f) | %.0f %% | %.2f |\n", k,
                    med(pps[k]), lo(pps[k]), hi(pps[k]), med(mus[k]), lo(mus[k]), hi(mus[k]),
                    med(gen[k]) * 100, med(rel[k])
            }
        }' "$rows"
    awk -F'\t' -v relay_cpu="$RELAY_CPU" -v gen_cpu="$GEN_CPU" '
        function full(list,   c, n, i, f) {
            n = split(list, c, ","); f = ""
            for (i = 1; i <= n; i++) if (c[i] >= 0.95) f = f (f == "" ? "" : ", ") "core " (i - 1)
            return f == "" ? "none" : f
        }
        $1 == "capacity" {
            if (!hdr++) {
                print ""
                print "## Capacity (threaded NAPI: rc and rp on core " relay_cpu ", c0 and p0 on core " gen_cpu ")"
                print ""
                print "| shape | dir | GSO | system | offered | delivered/s | loss | machine µs/pkt | gen CPU s | relay CPU s | cores busy | full (≥ 95 %) | note |"
                print "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
            }
            k = $3 " | " $4 " | " $5 " | " $6
            if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
            if ($7 == "unavailable") {
                printf "| %s | %s | unavailable | | | | | | | %s |\n", k, $2, $17; why[k] = $17; next
            }
            printf "| %s | %s | %.0f | %.2f %% | %s | %.2f | %.2f | %s | %s | %s |\n",
                k, $2, $9, $10 * 100, ($8 > 0 ? sprintf("%.2f", $12 / $8 * 1e6) : "-"),
                $14, $15, $16, full($16), $17
            # (reading best[k] or clean[k] creates them: has and cleanok say what was set)
            if ($7 == "ok" && (!has[k] || $9 > best[k])) { has[k] = 1; best[k] = $9; bestat[k] = $2; bestcores[k] = full($16) }
            if ($7 == "ok" && $10 <= 0.001 && (!cleanok[k] || $11 > clean[k])) { cleanok[k] = 1; clean[k] = $11; cleanat[k] = $2 }
        }
        END {
            if (!nk) exit
            print ""
            print "| shape | dir | GSO | system | highest delivered/s (at offered) | full core then | highest offered with ≤ 0.1 % loss |"
            print "|---|---|---|---|---|---|---|"
            for (i = 1; i <= nk; i++) {
                k = order[i]
                if (!has[k]) { printf "| %s | unavailable (%s) | | |\n", k, why[k]; continue }
                printf "| %s | %.0f (%s) | %s | %s |\n", k, best[k], bestat[k], bestcores[k],
                    cleanok[k] ? sprintf("%.0f/s (%s)", clean[k], cleanat[k]) : "none"
            }
        }' "$rows"
    echo
    echo "## Commands"
    echo
    echo "Reproduce with:"
    echo
    echo '```'
    echo "ROUNDS=$ROUNDS DURATION=$DURATION RATE=$RATE SYSTEMS=\"$SYSTEMS\" SHAPES=\"$SHAPES\" \\"
    echo "  DIRECTIONS=\"$DIRECTIONS\" GSO=\"$GSO\" CAPACITY=$CAPACITY RELAY_CPU=$RELAY_CPU GEN_CPU=$GEN_CPU \\"
    echo "  tuning/xdp/bench.sh"
    echo '```'
    echo
    echo "Every server and generator command, in order (server config: \`uturn.toml\` below):"
    echo
    echo '```'
    sed "s|$work|\$WORK|g" "$commands"
    echo '```'
    echo
    echo '`$WORK/uturn.toml`:'
    echo
    echo '```toml'
    cat "$config"
    echo '```'
} >"$OUT"
say "wrote $OUT"
