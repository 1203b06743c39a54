/* tx_back.bpf.c - sends UDP datagrams back where they came from (XDP_TX).
 *
 * For every IPv4/UDP datagram to `tx_port` it swaps the Ethernet source and
 * destination, the IPv4 source and destination addresses and the UDP source
 * and destination ports, and returns XDP_TX: the frame leaves by the interface
 * it arrived on, addressed to its sender.  Everything else gets XDP_PASS.
 *
 * No checksum needs fixing: the IPv4 header checksum and the UDP checksum are
 * one's-complement sums of 16-bit words (the UDP one over a pseudo-header with
 * both addresses), and swapping two fields changes the order of the words, not
 * their sum.
 *
 * Globals (program_globals):
 *   tx_port  __u16  0 = any UDP destination port; otherwise only that port.
 *
 * Example:  program: programs/tx_back.bpf.c
 *           program_globals: {tx_port: 9999}
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

const volatile __u16 tx_port = 0;

SEC("xdp")
int xdp_tx_back(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udph;
	unsigned char mac[ETH_ALEN];
	__u32 ihl_bytes, addr;
	__u16 port;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	ihl_bytes = iph->ihl * 4;
	if (ihl_bytes < sizeof(*iph) || iph->protocol != IPPROTO_UDP ||
	    (iph->frag_off & bpf_htons(0x1fff)))   /* a non-first fragment has no UDP header */
		return XDP_PASS;
	udph = (void *)iph + ihl_bytes;
	if ((void *)(udph + 1) > data_end)
		return XDP_PASS;
	if (tx_port && udph->dest != bpf_htons(tx_port))
		return XDP_PASS;

	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	addr = iph->saddr;
	iph->saddr = iph->daddr;
	iph->daddr = addr;
	port = udph->source;
	udph->source = udph->dest;
	udph->dest = port;
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
