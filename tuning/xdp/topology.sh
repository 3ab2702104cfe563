#!/usr/bin/env bash
# The XDP test topology: three network namespaces joined by two veth pairs.
#
#   ${PREFIX}c (client)          ${PREFIX}r (relay)                 ${PREFIX}p (peer)
#   c0 10.200.1.2/24  <-veth->  rc 10.200.1.1/24
#      fd00:1::2/64                fd00:1::1/64
#                               rp 10.200.2.1/24  <-veth->  p0 10.200.2.2/24
#                                  fd00:2::1/64                fd00:2::2/64
#
# The relay listens on 10.200.1.1 / fd00:1::1 and relays from 10.200.2.1 /
# fd00:2::1; every address is on a directly connected link, so no routes and
# no forwarding. Neighbour entries are static (permanent), so the first
# packets are not lost to ARP or neighbour discovery; IPv6 addresses are
# added with nodad, so they are usable at once.
#
# Usage: topology.sh up PREFIX | down PREFIX
#   PREFIX: a short word (interface and namespace names stay short), e.g. u1.
#   `down` removes whatever of the three namespaces exists (the veth pairs go
#   with them) and succeeds when there is nothing to remove.
#
# Environment (for `up`):
#   TX_CSUM=off|on    (default off) checksum offload on the senders' ends,
#                     c0 and p0. off: `ethtool -K c0 tx off`, `-K p0 tx off`.
#   PASS_XDP=1|0      (default 1) a native-mode XDP_PASS program on c0 and p0.
#   THREADED_NAPI=CPU (default unset) threaded NAPI on rc and rp, their NAPI
#                     kthreads pinned to CPU.
#   THREADED_NAPI_ENDS=CPU (default unset) the same on c0 and p0: the
#                     receive work of the client's and the peer's ends (the
#                     generator's, in a benchmark) pinned to CPU, so that it
#                     is not charged to the relay's core when the relay sends.
#
# Why TX_CSUM=off. With checksum offload on, a veth hands the packet over as
# CHECKSUM_PARTIAL: the UDP checksum field holds only the pseudo-header sum,
# to be completed by hardware that a veth does not have, and the stack on the
# other end trusts such a packet without reading the field. A packet that an
# XDP program sends on (XDP_TX, XDP_REDIRECT) leaves as an xdp_frame, which
# loses that mark: the far end checks the field in full and drops the packet
# (UDP InCsumErrors). A real NIC delivers full checksums; with tx off the
# senders compute them in software, as a remote host or its NIC would have.
#
# Why PASS_XDP=1. A veth delivers frames sent by XDP_TX or XDP_REDIRECT
# (ndo_xdp_xmit) only into a peer whose receive side runs NAPI, which it does
# when the peer has an XDP program attached (or, in part, GRO: below). The
# relay's XDP program answers on rc (into c0) and forwards out of rp (into
# p0), so c0 and p0 get a program that passes everything.
#
# Measured on Linux 6.18 (2-core KVM VM) with xdp-check.sh, which attaches a
# test program on rc: UDP to port 7 is echoed back by XDP_TX (addresses and
# ports swapped, checksum untouched), UDP to port 9 is rewritten to
# 10.200.2.1 -> 10.200.2.2 (checksums patched incrementally, as a relay does)
# and sent out of rp by XDP_REDIRECT; 200 datagrams of each:
#   TX_CSUM=off PASS_XDP=1: 200/200 echoes, 200/200 at the peer, no errors.
#   TX_CSUM=off PASS_XDP=0: 0 echoes (rc xdp_tx_errors +200), 0 at the peer
#     (rc rx drops +200: the redirect into rp is refused). PASS_XDP is needed.
#   TX_CSUM=off PASS_XDP=0, GRO on c0 and p0 instead: 200/200 at the peer, but
#     0 echoes (xdp:xdp_bulk_tx reports sent=0 drops=1 for each, c0 rx dropped
#     +200): GRO is no substitute for XDP_TX here.
#   TX_CSUM=on PASS_XDP=1: 0 echoes and 0 at the peer, UDP InCsumErrors +200
#     in the client and in the peer namespace: even the echo, whose checksum
#     XDP never touched, fails. TX_CSUM=off is needed.
# Packets that the relay sends through the stack (not XDP) are unaffected by
# either option: CHECKSUM_PARTIAL packets from rc pass c0's XDP_PASS program
# and are delivered.
#
# Why THREADED_NAPI. Without it, a packet a veth sends is received by the
# peer's NAPI in softirq on the *sending* CPU: the relay's receive work (and
# its XDP program) is charged to the generator's core. Threaded NAPI moves
# the receive side of rc and rp into kthreads (napi/rc-ID, napi/rp-ID) that
# are pinned to the relay's core, so that "which core is full" means what it
# says. A veth runs NAPI only with an XDP program or GRO on it (writing
# /sys/class/net/rc/threaded otherwise fails with EIO), so the script turns
# GRO on for rc and rp; then the kthreads also survive an XDP program being
# attached and detached (checked: same PIDs). UDP GRO coalesces only for
# sockets that ask for it (UDP_GRO), which uturn and the floor do not.
set -euo pipefail

usage() {
    echo "usage: $0 up|down PREFIX   (env: TX_CSUM=off|on PASS_XDP=1|0 THREADED_NAPI=CPU)" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
action=$1
prefix=$2
[[ $prefix =~ ^[A-Za-z0-9]{1,8}$ ]] || {
    echo "$0: PREFIX must be 1-8 letters or digits, got '$prefix'" >&2
    exit 2
}
ns_c=${prefix}c
ns_r=${prefix}r
ns_p=${prefix}p

say() { echo "topology: $*"; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

down() {
    local ns pids
    for ns in "$ns_c" "$ns_r" "$ns_p"; do
        if ns_exists "$ns"; then
            pids=$(ip netns pids "$ns" | tr '\n' ' ')
            if [[ -n $pids ]]; then
                # Not ours to stop: the namespace lives on until they exit.
                say "warning: processes still in $ns: $pids"
            fi
            ip netns del "$ns"
            say "deleted namespace $ns"
        fi
    done
}

# The MAC address of DEV in namespace NS.
mac_of() { ip -n "$1" -br link show dev "$2" | awk '{print $3}'; }

# PIDs of the kernel threads whose name is napi/DEV-<id>.
napi_threads() {
    local dev=$1 f comm
    for f in /proc/[0-9]*/comm; do
        comm=$(cat "$f" 2>/dev/null) || continue
        if [[ $comm == napi/"$dev"-* ]]; then
            f=${f#/proc/}
            echo "${f%/comm}"
        fi
    done
}

# Compiles the XDP_PASS program into $tmp/pass.o.
build_pass_program() {
    local multiarch
    multiarch=$(clang -print-multiarch 2>/dev/null || true)
    [[ -n $multiarch ]] || multiarch="$(uname -m)-linux-gnu"
    cat >"$tmp/pass.c" <<'EOF'
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp") int pass(struct xdp_md *c) { return XDP_PASS; }

char LICENSE[] SEC("license") = "GPL";
EOF
    # <linux/bpf.h> needs <asm/types.h>, which lives under the multiarch
    # include directory that -target bpf does not search.
    clang -O2 -g -target bpf -I"/usr/include/$multiarch" -c "$tmp/pass.c" -o "$tmp/pass.o"
}

# Threaded NAPI (with GRO, which gives a veth its NAPI) on each NS DEV pair,
# the new napi/DEV-* kthreads pinned to CPU; sets $pinned to "name[pid] ...".
threaded_napi() {
    local cpu=$1 ns dev before after pid
    shift
    pinned=""
    while [[ $# -ge 2 ]]; do
        ns=$1 dev=$2
        shift 2
        before=$(napi_threads "$dev" | sort)
        ip netns exec "$ns" ethtool -K "$dev" gro on >/dev/null
        ip netns exec "$ns" sh -c "echo 1 > /sys/class/net/$dev/threaded"
        after=$(napi_threads "$dev" | sort)
        # This topology's threads are the new ones: other topologies may
        # have kthreads of the same name.
        for pid in $(comm -13 <(echo "$before") <(echo "$after")); do
            taskset -pc "$cpu" "$pid" >/dev/null
            pinned+="$(cat "/proc/$pid/comm")[$pid] "
        done
    done
    if [[ -z $pinned ]]; then
        echo "$0: threaded NAPI started no napi/ kthread" >&2
        exit 1
    fi
}

up() {
    local tx_csum=${TX_CSUM:-off} pass_xdp=${PASS_XDP:-1} napi_cpu=${THREADED_NAPI:-}
    local ends_cpu=${THREADED_NAPI_ENDS:-} pinned
    [[ $tx_csum == off || $tx_csum == on ]] || { echo "$0: TX_CSUM must be off or on" >&2; exit 2; }
    [[ $pass_xdp == 0 || $pass_xdp == 1 ]] || { echo "$0: PASS_XDP must be 0 or 1" >&2; exit 2; }
    [[ -z $napi_cpu || $napi_cpu =~ ^[0-9]+$ ]] || { echo "$0: THREADED_NAPI must be a CPU number" >&2; exit 2; }
    [[ -z $ends_cpu || $ends_cpu =~ ^[0-9]+$ ]] || { echo "$0: THREADED_NAPI_ENDS must be a CPU number" >&2; exit 2; }
    local ns
    for ns in "$ns_c" "$ns_r" "$ns_p"; do
        if ns_exists "$ns"; then
            echo "$0: namespace $ns exists already; run '$0 down $prefix' first" >&2
            exit 1
        fi
    done
    # A failure half-way leaves nothing behind.
    trap 'down >/dev/null 2>&1 || true' ERR

    for ns in "$ns_c" "$ns_r" "$ns_p"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    # Each pair is created with its ends in their namespaces at once, so that
    # parallel topologies never meet over interface names in this namespace.
    ip -n "$ns_c" link add c0 type veth peer name rc netns "$ns_r"
    ip -n "$ns_r" link add rp type veth peer name p0 netns "$ns_p"

    ip -n "$ns_c" addr add 10.200.1.2/24 dev c0
    ip -n "$ns_c" addr add fd00:1::2/64 dev c0 nodad
    ip -n "$ns_r" addr add 10.200.1.1/24 dev rc
    ip -n "$ns_r" addr add fd00:1::1/64 dev rc nodad
    ip -n "$ns_r" addr add 10.200.2.1/24 dev rp
    ip -n "$ns_r" addr add fd00:2::1/64 dev rp nodad
    ip -n "$ns_p" addr add 10.200.2.2/24 dev p0
    ip -n "$ns_p" addr add fd00:2::2/64 dev p0 nodad
    ip -n "$ns_c" link set c0 up
    ip -n "$ns_r" link set rc up
    ip -n "$ns_r" link set rp up
    ip -n "$ns_p" link set p0 up
    say "namespaces $ns_c (c0 10.200.1.2 fd00:1::2), $ns_r (rc 10.200.1.1 fd00:1::1," \
        "rp 10.200.2.1 fd00:2::1), $ns_p (p0 10.200.2.2 fd00:2::2)"

    local c0 rc rp p0
    c0=$(mac_of "$ns_c" c0)
    rc=$(mac_of "$ns_r" rc)
    rp=$(mac_of "$ns_r" rp)
    p0=$(mac_of "$ns_p" p0)
    ip -n "$ns_c" neigh replace 10.200.1.1 lladdr "$rc" dev c0 nud permanent
    ip -n "$ns_c" neigh replace fd00:1::1 lladdr "$rc" dev c0 nud permanent
    ip -n "$ns_r" neigh replace 10.200.1.2 lladdr "$c0" dev rc nud permanent
    ip -n "$ns_r" neigh replace fd00:1::2 lladdr "$c0" dev rc nud permanent
    ip -n "$ns_r" neigh replace 10.200.2.2 lladdr "$p0" dev rp nud permanent
    ip -n "$ns_r" neigh replace fd00:2::2 lladdr "$p0" dev rp nud permanent
    ip -n "$ns_p" neigh replace 10.200.2.1 lladdr "$rp" dev p0 nud permanent
    ip -n "$ns_p" neigh replace fd00:2::1 lladdr "$rp" dev p0 nud permanent
    say "static neighbours: c0 $c0, rc $rc, rp $rp, p0 $p0"

    if [[ $tx_csum == off ]]; then
        ip netns exec "$ns_c" ethtool -K c0 tx off >/dev/null
        ip netns exec "$ns_p" ethtool -K p0 tx off >/dev/null
        say "TX_CSUM=off: tx checksum offload off on c0 and p0 (full checksums on the wire)"
    else
        say "TX_CSUM=on: c0 and p0 keep tx checksum offload (CHECKSUM_PARTIAL packets)"
    fi

    if [[ $pass_xdp == 1 ]]; then
        tmp=$(mktemp -d)
        build_pass_program
        ip -n "$ns_c" link set dev c0 xdpdrv obj "$tmp/pass.o" sec xdp
        ip -n "$ns_p" link set dev p0 xdpdrv obj "$tmp/pass.o" sec xdp
        rm -rf "$tmp"
        say "PASS_XDP=1: native XDP_PASS program on c0 and p0"
    else
        say "PASS_XDP=0: no XDP program on c0 and p0"
    fi

    if [[ -n $napi_cpu ]]; then
        threaded_napi "$napi_cpu" "$ns_r" rc "$ns_r" rp
        say "THREADED_NAPI=$napi_cpu: GRO and threaded NAPI on rc and rp; pinned to CPU $napi_cpu: $pinned"
    fi
    if [[ -n $ends_cpu ]]; then
        threaded_napi "$ends_cpu" "$ns_c" c0 "$ns_p" p0
        say "THREADED_NAPI_ENDS=$ends_cpu: GRO and threaded NAPI on c0 and p0; pinned to CPU $ends_cpu: $pinned"
    fi
    trap - ERR
}

case $action in
    up) up ;;
    down) down ;;
    *) usage ;;
esac
