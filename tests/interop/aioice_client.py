#!/usr/bin/env python3
"""Relays datagrams through a TURN server with aioice's TURN client.

Used by tests/interop.rs as a second TURN client that uturn did not write.

What it does, all on loopback and bounded in time:
  1. starts a UDP echo peer on 127.0.0.1 (an ephemeral port);
  2. allocates on the TURN server with `aioice.turn.create_turn_endpoint`
     (Allocate, 401 round with the long-term credential, MESSAGE-INTEGRITY
     checked on every signed response by aioice itself);
  3. sends COUNT numbered datagrams to the echo peer through the allocation.
     aioice's `TurnTransport.sendto` binds a channel (ChannelBind, numbers from
     0x4000 up) before the first datagram to a peer and then sends ChannelData
     only; the script counts the frames on the wire to prove it;
  4. waits for every echo, which comes back through the relay;
  5. deletes the allocation (Refresh with LIFETIME 0) and checks it succeeded.

With --transport tcp or tls the client leg is a TCP connection (TLS checked
against --ca, offering ALPN "stun.turn"). aioice's stream splitter assumes
every frame is padded to 4 bytes (RFC 8656 §12.5), so a server that did not
pad ChannelData of odd lengths would desynchronise it and echoes would be
lost: the payload sizes vary for that reason.

It prints one line that tests/interop.rs parses:
  RESULT sent=N received=M relayed=IP:PORT mapped=IP:PORT peer_saw=IP:PORT
         channel_data_out=A channel_data_in=B data_indications_in=C
         alpn=P deleted=yes|no
and exits 0 only when every datagram came back through a channel and the
allocation was deleted.
"""

import argparse
import asyncio
import logging
import ssl
import sys

try:
    import aioice
    from aioice import turn
except ImportError as exc:  # the caller tells "missing" apart from "failed"
    print(f"MISSING aioice: {exc}", flush=True)
    sys.exit(3)


class EchoPeer(asyncio.DatagramProtocol):
    """A peer that sends every datagram back to where it came from."""

    def __init__(self):
        self.sources = set()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.sources.add(addr[:2])
        self.transport.sendto(data, addr)


class Receiver(asyncio.DatagramProtocol):
    """What the application sees through the TURN transport."""

    def __init__(self, expected):
        self.expected = expected
        self.received = set()
        self.errors = []
        self.done = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if data in self.expected:
            self.received.add(data)
        if len(self.received) == len(self.expected) and not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc):
        self.errors.append(repr(exc))

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class WireCounter:
    """Counts what aioice's TURN protocols (UDP, and TCP for TCP and TLS) put
    on and take off the wire."""

    channel_data_out = 0
    channel_data_in = 0
    data_indications_in = 0

    @classmethod
    def install(cls):
        for proto in (turn.TurnClientUdpProtocol, turn.TurnClientTcpProtocol):
            cls._wrap(proto)

    @classmethod
    def _wrap(cls, proto):
        orig_send = proto._send
        orig_recv = proto.datagram_received

        def _send(self, data):
            if turn.is_channel_data(data):
                cls.channel_data_out += 1
            return orig_send(self, data)

        def datagram_received(self, data, addr):
            if len(data) >= 4 and turn.is_channel_data(data):
                cls.channel_data_in += 1
            elif len(data) >= 20 and data[0:2] == b"\x01\x15":  # Data indication
                cls.data_indications_in += 1
            return orig_recv(self, data, addr)

        proto._send = _send
        proto.datagram_received = datagram_received


def fmt(addr):
    if addr is None:
        return "none"
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run(args):
    loop = asyncio.get_running_loop()
    peer_transport, peer = await loop.create_datagram_endpoint(
        EchoPeer, local_addr=(args.peer_host, 0)
    )
    peer_addr = peer_transport.get_extra_info("sockname")[:2]

    # Sizes vary by one byte from datagram to datagram, so that ChannelData
    # of every length modulo 4 crosses the relay (padding over streams).
    payloads = [
        f"uturn-interop {i:05d} ".encode() + b"x" * (args.size + i % 4) for i in range(args.count)
    ]
    expected = set(payloads)

    host, port = args.server.rsplit(":", 1)
    host = host.strip("[]")
    result = {"relayed": None, "mapped": None, "deleted": "no", "alpn": "none"}
    receiver = None
    tls = None
    if args.transport == "tls":
        tls = ssl.create_default_context(cafile=args.ca)
        tls.set_alpn_protocols(["stun.turn"])
    try:
        transport, receiver = await asyncio.wait_for(
            turn.create_turn_endpoint(
                lambda: Receiver(expected),
                server_addr=(host, int(port)),
                username=args.user,
                password=args.password,
                lifetime=args.lifetime,
                transport="udp" if args.transport == "udp" else "tcp",
                ssl=tls,
            ),
            timeout=args.timeout,
        )
        if tls is not None:
            inner = transport._TurnTransport__inner_protocol.transport
            obj = inner.get_extra_info("ssl_object")
            result["alpn"] = (obj.selected_alpn_protocol() if obj else None) or "none"
        result["relayed"] = transport.get_extra_info("sockname")
        result["mapped"] = transport.get_extra_info("related_address")

        # The first sendto binds the channel; the rest wait for it.
        for i, payload in enumerate(payloads):
            transport.sendto(payload, peer_addr)
            if i % 20 == 19:
                await asyncio.sleep(0.005)  # pace a little; this is not a load test
        try:
            await asyncio.wait_for(asyncio.shield(receiver.done), timeout=args.timeout)
        except asyncio.TimeoutError:
            pass

        transport.close()
        try:
            exc = await asyncio.wait_for(asyncio.shield(receiver.lost), timeout=args.timeout)
            result["deleted"] = "yes" if exc is None and deleted_ok.is_set() else "no"
        except asyncio.TimeoutError:
            result["deleted"] = "no"
    finally:
        peer_transport.close()

    received = len(receiver.received) if receiver else 0
    print(
        "RESULT"
        f" sent={len(payloads)} received={received}"
        f" relayed={fmt(result['relayed'])} mapped={fmt(result['mapped'])}"
        f" peer_saw={','.join(fmt(s) for s in sorted(peer.sources)) or 'none'}"
        f" channel_data_out={WireCounter.channel_data_out}"
        f" channel_data_in={WireCounter.channel_data_in}"
        f" data_indications_in={WireCounter.data_indications_in}"
        f" alpn={result['alpn']}"
        f" deleted={result['deleted']}",
        flush=True,
    )
    if receiver and receiver.errors:
        print(f"ERRORS {receiver.errors}", flush=True)

    ok = (
        received == len(payloads)
        and WireCounter.channel_data_out >= len(payloads)
        and WireCounter.channel_data_in >= len(payloads)
        and result["deleted"] == "yes"
    )
    return 0 if ok else 1


class DeletedFlag(logging.Handler):
    """aioice logs "TURN allocation deleted" only when the Refresh(0) succeeded."""

    def __init__(self):
        super().__init__(logging.INFO)
        self._set = False

    def emit(self, record):
        if record.getMessage().startswith("TURN allocation deleted"):
            self._set = True

    def is_set(self):
        return self._set


deleted_ok = DeletedFlag()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="TURN server HOST:PORT")
    p.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    p.add_argument("--ca", help="PEM certificate the TLS server is checked against")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--size", type=int, default=64, help="extra payload bytes per datagram")
    p.add_argument("--lifetime", type=int, default=600)
    p.add_argument("--peer-host", default="127.0.0.1")
    p.add_argument("--timeout", type=float, default=10.0, help="bound for each phase, seconds")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(name)s %(levelname)s %(message)s",
    )
    turn_logger = logging.getLogger("aioice.turn")
    turn_logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    turn_logger.addHandler(deleted_ok)
    print(f"aioice {getattr(aioice, '__version__', '?')} python {sys.version.split()[0]}", flush=True)

    WireCounter.install()
    try:
        code = asyncio.run(run(args))
    except Exception as exc:  # report, do not hide: the test prints this line
        print(f"FAILED {type(exc).__name__}: {exc!r}", flush=True)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
