#!/usr/bin/env bash
# Does XDP_TX and XDP_REDIRECT work on this topology, with valid checksums?
#
# Usage: xdp-check.sh PREFIX   (a topology made by `topology.sh up PREFIX`)
#
# Attaches xdp-check.c (native mode) on rc for a few seconds: UDP to
# 10.200.1.1:7 is echoed back to the client by XDP_TX, UDP to 10.200.1.1:9 is
# rewritten and redirected out of rp to 10.200.2.2:9. The client sends 200
# datagrams of each kind; the script prints how many echoes came back, how
# many reached the peer, UDP InCsumErrors in the client and peer namespaces,
# and the veth XDP counters (ethtool -S). Then it detaches the program.
# Needs clang and python3. See topology.sh for what the results mean.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 PREFIX" >&2; exit 2; }
prefix=$1
ns_c=${prefix}c ns_r=${prefix}r ns_p=${prefix}p
here=$(cd "$(dirname "$0")" && pwd)
count=200

c_bytes() { ip -n "$1" -br link show dev "$2" | awk '{print $3}' | sed 's/^/0x/; s/:/,0x/g'; }
# A counter of the Udp: lines of /proc/net/snmp in namespace $1, by name.
udp_stat() {
    ip netns exec "$1" awk -v k="$2" '/^Udp:/ {
        if (!h) { for (i = 2; i <= NF; i++) if ($i == k) f = i; h = 1 } else print $f }' /proc/net/snmp
}
csum_errors() { udp_stat "$1" InCsumErrors; }
# A veth XDP counter (rx_queue_N_$3 or tx_queue_N_$3) summed over queues.
xdp_stat() {
    ip netns exec "$1" ethtool -S "$2" | awk -v k="$3" '$1 ~ ("^(rx|tx)_queue_[0-9]+_" k ":$") { s += $2 } END { print s + 0 }'
}

tmp=$(mktemp -d)
cleanup() {
    ip -n "$ns_r" link set dev rc xdpdrv off 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

multiarch=$(clang -print-multiarch 2>/dev/null || true)
[[ -n $multiarch ]] || multiarch="$(uname -m)-linux-gnu"
clang -O2 -g -target bpf -I"/usr/include/$multiarch" \
    -DRP_IFINDEX="$(ip netns exec "$ns_r" cat /sys/class/net/rp/ifindex)" \
    -DRP_MAC="$(c_bytes "$ns_r" rp)" -DP0_MAC="$(c_bytes "$ns_p" p0)" \
    -c "$here/xdp-check.c" -o "$tmp/check.o"
ip -n "$ns_r" link set dev rc xdpdrv obj "$tmp/check.o" sec xdp

c_err0=$(csum_errors "$ns_c")
p_err0=$(csum_errors "$ns_p")
tx0=$(xdp_stat "$ns_r" rc 'xdp_tx')
txerr0=$(xdp_stat "$ns_r" rc 'xdp_tx_errors')
redir0=$(xdp_stat "$ns_r" rc 'xdp_redirect')
drops0=$(xdp_stat "$ns_r" rc 'drops')
xmit0=$(xdp_stat "$ns_r" rp 'xdp_xmit')
xmiterr0=$(xdp_stat "$ns_r" rp 'xdp_xmit_errors')

# The peer counts what reaches 10.200.2.2:9 for 3 s.
ip netns exec "$ns_p" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
s.bind(("10.200.2.2", 9)); s.settimeout(0.2)
n, end = 0, time.time() + 3
while time.time() < end:
    try: s.recv(2048); n += 1
    except socket.timeout: pass
print(n)' >"$tmp/peer" &
peer=$!
sleep 0.5
echoes=$(ip netns exec "$ns_c" python3 -c '
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: hold every echo
s.bind(("10.200.1.2", 0)); s.settimeout(0.2)
for i in range(n):
    s.sendto(b"x" * 100, ("10.200.1.1", 9))
    s.sendto(b"e" * 100, ("10.200.1.1", 7))
got, end = 0, time.time() + 1
while time.time() < end:
    try:
        d, a = s.recvfrom(2048)
        if a == ("10.200.1.1", 7): got += 1
    except socket.timeout: pass
print(got)' "$count")
wait "$peer"

d() { echo $(($2 - $1)); }
echo "xdp-check $prefix: sent $count to port 7 (XDP_TX echo) and $count to port 9 (XDP_REDIRECT to the peer)"
echo "  echoes back at the client:     $echoes   (client UDP InCsumErrors +$(d "$c_err0" "$(csum_errors "$ns_c")"))"
echo "  reached the peer:              $(cat "$tmp/peer")   (peer UDP InCsumErrors +$(d "$p_err0" "$(csum_errors "$ns_p")"))"
echo "  rc xdp_tx +$(d "$tx0" "$(xdp_stat "$ns_r" rc xdp_tx)"), xdp_tx_errors +$(d "$txerr0" "$(xdp_stat "$ns_r" rc xdp_tx_errors)"), xdp_redirect +$(d "$redir0" "$(xdp_stat "$ns_r" rc xdp_redirect)"), drops +$(d "$drops0" "$(xdp_stat "$ns_r" rc drops)")"
echo "  rp xdp_xmit +$(d "$xmit0" "$(xdp_stat "$ns_r" rp xdp_xmit)"), xdp_xmit_errors +$(d "$xmiterr0" "$(xdp_stat "$ns_r" rp xdp_xmit_errors)")"
