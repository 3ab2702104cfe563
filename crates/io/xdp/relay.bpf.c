// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// uturn's XDP fast path: TURN ChannelData (RFC 8656 §12) for bound channels,
// forwarded in the driver layer, in both directions.
//
//   client → peer: a datagram to a listen address whose payload is
//     ChannelData of a channel bound on that client's 5-tuple loses its
//     4-byte header and leaves from the relayed address to the peer;
//   peer → client: a datagram to a relayed address from a peer with a
//     bound channel gets the header and leaves from the listen address to
//     the client.
//
// The maps are a cache of the relay's decisions, filled and emptied by the
// shards (user space is the authority). Anything this program does not
// forward goes up to the socket path untouched (XDP_PASS), and each such
// packet is counted under the reason it was passed.
//
// Next hops: bpf_fib_lookup() refuses to work unless IP forwarding is
// enabled on the ingress interface, and a relay must not be a router. So
// the next hop toward each side of a channel is learned from the socket
// path: `uturn_learn`, on the egress of the same interfaces (TCX, Linux
// 6.6+), reads the interface and MAC addresses the kernel's routing and
// neighbour tables chose for the relay's own datagram to that client or
// peer. The first datagram of a channel in each direction therefore takes
// the socket path, and the ones after it are forwarded here. On kernels
// without TCX links, `learn_ingress` makes the XDP program learn each side
// from that side's own packets instead (the way they came in).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// The layouts below are mirrored by `uturn_io::xdp::maps` (repr(C)); a
// test there checks the sizes.

// Addresses are 16 bytes; IPv4 ones are IPv4-mapped (::ffff:a.b.c.d).
struct client_key {
	__u8 client_ip[16];
	__u8 server_ip[16];
	__be16 client_port;
	__be16 server_port;
	__be16 channel;
	__u16 zero;
};

struct peer_key {
	__u8 peer_ip[16];
	__u8 relay_ip[16];
	__be16 peer_port;
	__be16 relay_port;
	__u32 zero;
};

// How to rewrite a matched datagram, and until when.
struct route {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__be16 src_port;
	__be16 dst_port;
	__be16 channel;		// prepended towards the client; 0 towards a peer
	__u8 v4;		// 1: leave as IPv4
	__u8 zero;
	__u32 slot;		// index into `hops` and `traffic`
	__u32 zero2;
	__u64 expires_ns;	// CLOCK_MONOTONIC; refused from then on
};

// A learned link-layer next hop; ifindex 0 means not learned yet.
struct hop {
	__u32 ifindex;
	__u8 ours[ETH_ALEN];
	__u8 theirs[ETH_ALEN];
};

struct hops {
	struct hop client;
	struct hop peer;
};

struct traffic {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
};

// What happened to a packet; indexes of `stats`. Mirrored by
// `uturn_io::xdp::Outcome`.
enum outcome {
	FWD_TO_PEER,
	FWD_TO_CLIENT,
	PASS_NOT_UDP,		// not IPv4/IPv6 UDP, or VLAN-tagged
	PASS_NO_ROUTE,		// UDP, but no bound channel matches
	PASS_EXPIRED,		// the route's expiry has passed
	PASS_MALFORMED,		// lengths disagree, bad IPv4 header checksum
	PASS_PADDED,		// ChannelData with padding over UDP
	PASS_IP_OPTIONS,	// IPv4 options, fragments, IPv6 extension headers
	PASS_NO_CHECKSUM,	// IPv4 without a UDP checksum, leaving as IPv6
	PASS_HOP_UNKNOWN,	// the next hop toward the destination not learned yet
	PASS_MTU,		// the rewritten packet would not fit the egress MTU
	PASS_ADJUST_FAILED,	// the kernel refused to move the packet's head
	OUTCOMES,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct client_key);
	__type(value, struct route);
} to_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct route);
} to_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct hops);
} hops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct traffic);
} traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OUTCOMES);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// Set by the loader: learn next hops from arriving packets (no TCX).
volatile const __u8 learn_ingress = 0;

// TC_ACT_UNSPEC, which TCX calls TCX_NEXT: let the packet go on as it is.
#define TC_NEXT (-1)
#define ETH_LEN 14
#define IP4_LEN 20
#define IP6_LEN 40
#define UDP_LEN 8
#define CHANNEL_LEN 4

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &what);

	if (n)
		*n += 1;
}

// Counts why a packet goes up to the socket path, and lets it go.
static __always_inline int pass(__u32 why)
{
	count(why);
	return XDP_PASS;
}

// One's-complement arithmetic for the incremental UDP checksum (RFC 1624):
// the new checksum is ~(~old + ~(words removed) + (words added)).
static __always_inline __u32 add16(__u32 sum, __u16 word)
{
	return sum + word;
}

static __always_inline __u32 sub16(__u32 sum, __u16 word)
{
	return sum + (__u16)~word;
}

// Adds (or subtracts) an address as 16-bit words: the last 4 bytes of an
// IPv4-mapped one, or all 16.
static __always_inline __u32 add_ip(__u32 sum, const __u8 *ip, int v4)
{
	const __u16 *w = (const __u16 *)ip;

	if (v4)
		return sum + w[6] + w[7];
#pragma unroll
	for (int i = 0; i < 8; i++)
		sum += w[i];
	return sum;
}

static __always_inline __u32 sub_ip(__u32 sum, const __u8 *ip, int v4)
{
	const __u16 *w = (const __u16 *)ip;

	if (v4)
		return sum + (__u16)~w[6] + (__u16)~w[7];
#pragma unroll
	for (int i = 0; i < 8; i++)
		sum += (__u16)~w[i];
	return sum;
}

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// The addresses, ports and lengths of a parsed datagram: all the checksum
// and the look-ups need, copied out before the headers are rewritten.
struct parsed {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u16 udp_len;		// host order, header included
	__u16 check;		// as on the wire
	__u16 hdr_len;		// Ethernet + IP + UDP
	__u8 v4;
};

static __always_inline void map_v4(__u8 *out, __be32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

static __always_inline int ip4_header_ok(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < IP4_LEN / 2; i++)
		sum += w[i];
	return fold(sum) == 0xffff;
}

// Parses Ethernet + IPv4/IPv6 + UDP. Returns -1 and counts the reason when
// the packet is not for this program.
static __always_inline int parse(struct xdp_md *ctx, struct parsed *p, __u32 *why)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u16 l3_payload;

	if ((void *)(eth + 1) > end) {
		*why = PASS_NOT_UDP;
		return -1;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)ip + IP4_LEN + UDP_LEN > end) {
			*why = PASS_NOT_UDP;
			return -1;
		}
		if (ip->protocol != IPPROTO_UDP) {
			*why = PASS_NOT_UDP;
			return -1;
		}
		if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff))) {
			*why = PASS_IP_OPTIONS;
			return -1;
		}
		if (!ip4_header_ok(ip)) {
			*why = PASS_MALFORMED;
			return -1;
		}
		__u16 tot = bpf_ntohs(ip->tot_len);

		if (tot < IP4_LEN + UDP_LEN || (void *)ip + tot > end) {
			*why = PASS_MALFORMED;
			return -1;
		}
		l3_payload = tot - IP4_LEN;
		map_v4(p->src, ip->saddr);
		map_v4(p->dst, ip->daddr);
		p->v4 = 1;
		p->hdr_len = ETH_LEN + IP4_LEN + UDP_LEN;
		udp = (void *)ip + IP4_LEN;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)ip6 + IP6_LEN + UDP_LEN > end) {
			*why = PASS_NOT_UDP;
			return -1;
		}
		if (ip6->nexthdr != IPPROTO_UDP) {
			*why = ip6->nexthdr == IPPROTO_TCP || ip6->nexthdr == IPPROTO_ICMPV6 ?
				       PASS_NOT_UDP :
				       PASS_IP_OPTIONS;
			return -1;
		}
		l3_payload = bpf_ntohs(ip6->payload_len);
		if (l3_payload < UDP_LEN || (void *)ip6 + IP6_LEN + l3_payload > end) {
			*why = PASS_MALFORMED;
			return -1;
		}
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->v4 = 0;
		p->hdr_len = ETH_LEN + IP6_LEN + UDP_LEN;
		udp = (void *)ip6 + IP6_LEN;
	} else {
		*why = PASS_NOT_UDP;
		return -1;
	}
	if ((void *)(udp + 1) > end) {
		*why = PASS_NOT_UDP;
		return -1;
	}
	p->udp_len = bpf_ntohs(udp->len);
	if (p->udp_len != l3_payload) {
		*why = PASS_MALFORMED;
		return -1;
	}
	p->sport = udp->source;
	p->dport = udp->dest;
	p->check = udp->check;
	return 0;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b &&
	       *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

// Records that `theirs` is reached from `ours` on `ifindex` (written only
// when it changed, to keep the cache line shared).
static __always_inline void learn(struct hop *h, __u32 ifindex, const __u8 *ours,
				  const __u8 *theirs)
{
	if (h->ifindex == ifindex && same_mac(h->theirs, theirs) && same_mac(h->ours, ours))
		return;
	__builtin_memcpy(h->theirs, theirs, ETH_ALEN);
	__builtin_memcpy(h->ours, ours, ETH_ALEN);
	h->ifindex = ifindex;
}

// learn_ingress: the sender of this packet is reached back the way it came.
static __always_inline void learn_from(struct hop *h, struct xdp_md *ctx)
{
	struct ethhdr *eth = (void *)(long)ctx->data;

	if (!learn_ingress || (void *)(eth + 1) > (void *)(long)ctx->data_end)
		return;
	learn(h, ctx->ingress_ifindex, eth->h_dest, eth->h_source);
}

// Writes fresh Ethernet, IP and UDP headers at the (moved) head of the
// packet for `r`, with `udp_len` bytes of UDP and the checksum `check`.
// Returns the byte after the UDP header, or NULL if the packet is too short.
static __always_inline void *write_headers(struct xdp_md *ctx, const struct route *r,
					   const struct hop *h, __u16 udp_len, __u16 check)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return NULL;
	__builtin_memcpy(eth->h_dest, h->theirs, ETH_ALEN);
	__builtin_memcpy(eth->h_source, h->ours, ETH_ALEN);
	if (r->v4) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)ip + IP4_LEN + UDP_LEN > end)
			return NULL;
		eth->h_proto = bpf_htons(ETH_P_IP);
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(IP4_LEN + udp_len);
		ip->id = 0;
		ip->frag_off = bpf_htons(0x4000);	// DF, as the socket path sends
		ip->ttl = 64;
		ip->protocol = IPPROTO_UDP;
		ip->check = 0;
		__builtin_memcpy(&ip->saddr, r->src_ip + 12, 4);
		__builtin_memcpy(&ip->daddr, r->dst_ip + 12, 4);
		{
			const __u16 *w = (const __u16 *)ip;
			__u32 sum = 0;

#pragma unroll
			for (int i = 0; i < IP4_LEN / 2; i++)
				sum += w[i];
			ip->check = ~fold(sum);
		}
		udp = (void *)ip + IP4_LEN;
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)ip6 + IP6_LEN + UDP_LEN > end)
			return NULL;
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(udp_len);
		ip6->nexthdr = IPPROTO_UDP;
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, r->src_ip, 16);
		__builtin_memcpy(&ip6->daddr, r->dst_ip, 16);
		udp = (void *)ip6 + IP6_LEN;
	}
	udp->source = r->src_port;
	udp->dest = r->dst_port;
	udp->len = bpf_htons(udp_len);
	udp->check = check;
	return udp + 1;
}

// The checksum after replacing the pseudo-header and the ports of `p` with
// those of `r` and the UDP length with `udp_len`, and removing (`sign` < 0)
// or adding (> 0) the ChannelData header `ch_num`, `ch_len`. Returns 0 when
// the datagram had no checksum and leaves as IPv4 (none needed then).
static __always_inline __u16 new_check(const struct parsed *p, const struct route *r,
				       __u16 udp_len, __be16 ch_num, __be16 ch_len, int sign)
{
	__u32 sum;
	__u16 out;

	if (p->check == 0)
		return 0;
	sum = (__u16)~p->check;
	sum = sub_ip(sum, p->src, p->v4);
	sum = sub_ip(sum, p->dst, p->v4);
	// The UDP length is in the pseudo-header and in the UDP header.
	sum = sub16(sum, bpf_htons(p->udp_len));
	sum = sub16(sum, bpf_htons(p->udp_len));
	sum = sub16(sum, p->sport);
	sum = sub16(sum, p->dport);
	if (sign < 0) {
		sum = sub16(sum, ch_num);
		sum = sub16(sum, ch_len);
	} else {
		sum = add16(sum, ch_num);
		sum = add16(sum, ch_len);
	}
	sum = add_ip(sum, r->src_ip, r->v4);
	sum = add_ip(sum, r->dst_ip, r->v4);
	sum = add16(sum, bpf_htons(udp_len));
	sum = add16(sum, bpf_htons(udp_len));
	sum = add16(sum, r->src_port);
	sum = add16(sum, r->dst_port);
	out = ~fold(sum);
	// 0 means "no checksum" in UDP; its one's-complement twin is sent.
	return out ? out : 0xffff;
}

// Moves the packet's start so that `new_hdr` bytes of headers end where
// `old_hdr` bytes ended, and trims what lies past `payload_end` bytes from
// the old start (Ethernet padding). Returns 0 on success.
static __always_inline int reshape(struct xdp_md *ctx, int old_hdr, int new_hdr, int old_frame)
{
	int have = (int)(ctx->data_end - ctx->data);

	if (have > old_frame && bpf_xdp_adjust_tail(ctx, old_frame - have))
		return -1;
	if (old_hdr != new_hdr && bpf_xdp_adjust_head(ctx, old_hdr - new_hdr))
		return -1;
	return 0;
}

static __always_inline int transmit(struct xdp_md *ctx, const struct hop *h)
{
	if (h->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(h->ifindex, 0);
}

static __always_inline __u16 hdr_len_of(const struct route *r)
{
	return ETH_LEN + (r->v4 ? IP4_LEN : IP6_LEN) + UDP_LEN;
}

static __always_inline int fits_mtu(struct xdp_md *ctx, const struct hop *h, const struct route *r,
				    __u16 udp_len)
{
	__u32 l3 = (r->v4 ? IP4_LEN : IP6_LEN) + udp_len;

	return bpf_check_mtu(ctx, h->ifindex, &l3, 0, 0) == 0;
}

static __always_inline int client_to_peer(struct xdp_md *ctx, struct parsed *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct client_key key = {};
	__u8 *payload;
	struct route *r;
	struct hops *hp;
	__be16 ch_num, ch_len;
	__u16 len, udp_len;

	// p->hdr_len is 42 or 62: re-derive a constant offset for the verifier.
	payload = data + (p->v4 ? ETH_LEN + IP4_LEN + UDP_LEN : ETH_LEN + IP6_LEN + UDP_LEN);
	if ((void *)(payload + CHANNEL_LEN) > end)
		return -1;
	// ChannelData starts with the bits 01 (RFC 8656 §12.4): anything else
	// (STUN, a peer's datagram) skips this look-up.
	if ((payload[0] & 0xc0) != 0x40)
		return -1;
	ch_num = *(__be16 *)payload;
	ch_len = *(__be16 *)(payload + 2);
	__builtin_memcpy(key.client_ip, p->src, 16);
	__builtin_memcpy(key.server_ip, p->dst, 16);
	key.client_port = p->sport;
	key.server_port = p->dport;
	key.channel = ch_num;
	r = bpf_map_lookup_elem(&to_peer, &key);
	if (!r)
		return -1;
	if (bpf_ktime_get_ns() >= r->expires_ns)
		return pass(PASS_EXPIRED);
	len = bpf_ntohs(ch_len);
	if (p->udp_len < UDP_LEN + CHANNEL_LEN + len)
		return pass(PASS_MALFORMED);
	if (p->udp_len != UDP_LEN + CHANNEL_LEN + len)
		return pass(PASS_PADDED);
	hp = bpf_map_lookup_elem(&hops, &r->slot);
	if (!hp)
		return pass(PASS_HOP_UNKNOWN);
	learn_from(&hp->client, ctx);
	if (hp->peer.ifindex == 0)
		return pass(PASS_HOP_UNKNOWN);
	if (!r->v4 && p->v4 && p->check == 0)
		return pass(PASS_NO_CHECKSUM);
	udp_len = UDP_LEN + len;
	if (!fits_mtu(ctx, &hp->peer, r, udp_len))
		return pass(PASS_MTU);

	struct hop h = hp->peer;
	__u16 check = new_check(p, r, udp_len, ch_num, ch_len, -1);
	int old_hdr = p->hdr_len + CHANNEL_LEN;
	int new_hdr = hdr_len_of(r);

	if (reshape(ctx, old_hdr, new_hdr, p->hdr_len + CHANNEL_LEN + len))
		return pass(PASS_ADJUST_FAILED);
	if (!write_headers(ctx, r, &h, udp_len, check))
		return XDP_ABORTED;

	struct traffic *t = bpf_map_lookup_elem(&traffic, &r->slot);

	if (t) {
		t->to_peer_packets += 1;
		t->to_peer_bytes += len;
	}
	count(FWD_TO_PEER);
	return transmit(ctx, &h);
}

static __always_inline int peer_to_client(struct xdp_md *ctx, struct parsed *p)
{
	struct peer_key key = {};
	struct route *r;
	struct hops *hp;
	__u16 len, udp_len;

	__builtin_memcpy(key.peer_ip, p->src, 16);
	__builtin_memcpy(key.relay_ip, p->dst, 16);
	key.peer_port = p->sport;
	key.relay_port = p->dport;
	r = bpf_map_lookup_elem(&to_client, &key);
	if (!r)
		return pass(PASS_NO_ROUTE);
	if (bpf_ktime_get_ns() >= r->expires_ns)
		return pass(PASS_EXPIRED);
	hp = bpf_map_lookup_elem(&hops, &r->slot);
	if (!hp)
		return pass(PASS_HOP_UNKNOWN);
	learn_from(&hp->peer, ctx);
	if (hp->client.ifindex == 0)
		return pass(PASS_HOP_UNKNOWN);
	if (!r->v4 && p->v4 && p->check == 0)
		return pass(PASS_NO_CHECKSUM);
	len = p->udp_len - UDP_LEN;
	if (len > 0xffff - UDP_LEN - CHANNEL_LEN - IP6_LEN)
		return pass(PASS_MTU);
	udp_len = UDP_LEN + CHANNEL_LEN + len;
	if (!fits_mtu(ctx, &hp->client, r, udp_len))
		return pass(PASS_MTU);

	struct hop h = hp->client;
	__be16 ch_num = r->channel;
	__be16 ch_len = bpf_htons(len);
	__u16 check = new_check(p, r, udp_len, ch_num, ch_len, 1);
	int old_hdr = p->hdr_len;
	int new_hdr = hdr_len_of(r) + CHANNEL_LEN;

	if (reshape(ctx, old_hdr, new_hdr, p->hdr_len + len))
		return pass(PASS_ADJUST_FAILED);

	__u8 *after = write_headers(ctx, r, &h, udp_len, check);

	if (!after || (void *)(after + CHANNEL_LEN) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	*(__be16 *)after = ch_num;
	*(__be16 *)(after + 2) = ch_len;

	struct traffic *t = bpf_map_lookup_elem(&traffic, &r->slot);

	if (t) {
		t->to_client_packets += 1;
		t->to_client_bytes += len;
	}
	count(FWD_TO_CLIENT);
	return transmit(ctx, &h);
}

SEC("xdp")
int uturn_relay(struct xdp_md *ctx)
{
	struct parsed p = {};
	__u32 why = PASS_NOT_UDP;
	int rc;

	if (parse(ctx, &p, &why))
		return pass(why);
	// ChannelData starts with 0b01 (RFC 8656 §12.4); try it as a client's
	// first, then as a peer's datagram to a relayed address.
	rc = client_to_peer(ctx, &p);
	if (rc >= 0)
		return rc;
	return peer_to_client(ctx, &p);
}

// On the egress of the relay's interfaces: learns where the kernel sends
// the socket path's datagrams to a bound channel's client (ChannelData
// from a listen address) or peer (from a relayed address). Never changes
// or holds a packet.
SEC("classifier")
int uturn_learn(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 src[16], dst[16];
	struct udphdr *udp;
	struct route *r;
	struct hops *hp;

	if ((void *)(eth + 1) > end)
		return TC_NEXT;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)ip + IP4_LEN + UDP_LEN > end || ip->protocol != IPPROTO_UDP ||
		    ip->ihl != 5)
			return TC_NEXT;
		map_v4(src, ip->saddr);
		map_v4(dst, ip->daddr);
		udp = (void *)ip + IP4_LEN;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)ip6 + IP6_LEN + UDP_LEN > end || ip6->nexthdr != IPPROTO_UDP)
			return TC_NEXT;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		udp = (void *)ip6 + IP6_LEN;
	} else {
		return TC_NEXT;
	}
	if ((void *)(udp + 1) > end)
		return TC_NEXT;
	__u8 *payload = (void *)(udp + 1);

	if ((void *)(payload + CHANNEL_LEN) <= end && (payload[0] & 0xc0) == 0x40) {
		struct client_key key = {};

		__builtin_memcpy(key.client_ip, dst, 16);
		__builtin_memcpy(key.server_ip, src, 16);
		key.client_port = udp->dest;
		key.server_port = udp->source;
		key.channel = *(__be16 *)payload;
		r = bpf_map_lookup_elem(&to_peer, &key);
		if (r) {
			hp = bpf_map_lookup_elem(&hops, &r->slot);
			if (hp)
				learn(&hp->client, skb->ifindex, eth->h_source, eth->h_dest);
			return TC_NEXT;
		}
	}
	struct peer_key key = {};

	__builtin_memcpy(key.peer_ip, dst, 16);
	__builtin_memcpy(key.relay_ip, src, 16);
	key.peer_port = udp->dest;
	key.relay_port = udp->source;
	r = bpf_map_lookup_elem(&to_client, &key);
	if (r) {
		hp = bpf_map_lookup_elem(&hops, &r->slot);
		if (hp)
			learn(&hp->peer, skb->ifindex, eth->h_source, eth->h_dest);
	}
	return TC_NEXT;
}

// A program that passes everything, for the far ends of veth test links
// (native XDP on veth needs one on the receiving end).
SEC("xdp")
int uturn_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
