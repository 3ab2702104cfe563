# Shared by the tuning scripts; source it from the repository root. It makes
# a scratch directory ($work) that goes on exit, together with the processes
# whose PIDs are in $pid and $peer then (a script empties them once it has
# stopped a process itself), and finds free loopback ports.
work=$(mktemp -d)
pid="" peer=""
cleanup() {
  for p in $pid $peer; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_tcp_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
