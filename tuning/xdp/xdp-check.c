// A test program for the topology's rc end (not uturn's XDP program): it shows
// whether frames that XDP sends on a veth arrive, and with a valid checksum.
//   UDP to port 7 (echo): MACs, IPv4 addresses and ports swapped, XDP_TX back
//     out of rc to c0 (the UDP checksum is unchanged by a swap).
//   UDP to port 9 (forward): rewritten to RP_MAC -> P0_MAC, 10.200.2.1 ->
//     10.200.2.2, the IPv4 and UDP checksums patched incrementally (as a
//     relay does), XDP_REDIRECT out of rp (ifindex RP_IFINDEX) to p0.
//   Anything else: XDP_PASS.
// RP_IFINDEX, RP_MAC and P0_MAC come from the compiler's command line (-D).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

static __always_inline __u16 fold(__u32 c)
{
    c = (c & 0xffff) + (c >> 16);
    c = (c & 0xffff) + (c >> 16);
    return (__u16)~c;
}

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for a 32-bit field m -> m'.
static __always_inline __u16 replace4(__u16 check, __u32 from, __u32 to)
{
    __u32 c = (__u16)~check;
    c += (~from & 0xffff) + (~from >> 16) + (to & 0xffff) + (to >> 16);
    return fold(c);
}

SEC("xdp") int check(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct udphdr *udp = (void *)ip + sizeof(*ip);
    if ((void *)(udp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
        ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return XDP_PASS;

    if (udp->dest == bpf_htons(7)) {
        unsigned char mac[ETH_ALEN];
        __builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
        __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
        __builtin_memcpy(eth->h_source, mac, ETH_ALEN);
        __u32 a = ip->saddr;
        ip->saddr = ip->daddr;
        ip->daddr = a;
        __u16 p = udp->source;
        udp->source = udp->dest;
        udp->dest = p;
        return XDP_TX;
    }
    if (udp->dest == bpf_htons(9)) {
        const unsigned char src[ETH_ALEN] = {RP_MAC};
        const unsigned char dst[ETH_ALEN] = {P0_MAC};
        __builtin_memcpy(eth->h_source, src, ETH_ALEN);
        __builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
        __u32 saddr = bpf_htonl(0x0ac80201), daddr = bpf_htonl(0x0ac80202);
        ip->check = replace4(ip->check, ip->saddr, saddr);
        ip->check = replace4(ip->check, ip->daddr, daddr);
        if (udp->check) {
            __u16 c = replace4(udp->check, ip->saddr, saddr);
            c = replace4(c, ip->daddr, daddr);
            udp->check = c ? c : 0xffff;
        }
        ip->saddr = saddr;
        ip->daddr = daddr;
        return bpf_redirect(RP_IFINDEX, 0);
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
