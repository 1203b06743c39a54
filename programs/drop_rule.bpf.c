/* drop_rule.bpf.c - drops the packets a rule names, passes everything else.
 *
 * The rule is set before load through `const volatile` globals
 * (program_globals), so the choice costs no map lookup per packet:
 *   drop_port     __u16  0 = off; otherwise XDP_DROP every IPv4/UDP datagram
 *                        to this destination port.
 *   drop_odd_seq  __u8   1 = XDP_DROP every xdplab packet (IPv4/UDP whose
 *                        payload starts with the xdplab header, XDPLAB_MAGIC)
 *                        whose sequence number is odd; 0 = off.
 *   abort_instead __u8   1 = return XDP_ABORTED instead of XDP_DROP for the
 *                        packets the rule names (a program that fails on them:
 *                        the books count them as prog_aborted); 0 = off.
 * Everything else (ARP, other protocols, non-first fragments, frames too short
 * for the headers they claim) gets XDP_PASS.  A drop is the program's verdict,
 * not loss: the books count it as prog_drop, and by sequence number one can
 * check that exactly the odd ones went.
 *
 * Example:  program: programs/drop_rule.bpf.c
 *           program_globals: {drop_odd_seq: 1}
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "xdplab.h"

const volatile __u16 drop_port = 0;
const volatile __u8 drop_odd_seq = 0;
const volatile __u8 abort_instead = 0;

static __always_inline int named(void)
{
	return abort_instead ? XDP_ABORTED : XDP_DROP;
}

SEC("xdp")
int xdp_drop_rule(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udph;
	struct xdplab_payload_hdr *hdr;
	__u32 ihl_bytes;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	/* ihl counts 32-bit words: options make the header longer than 20 bytes. */
	ihl_bytes = iph->ihl * 4;
	if (ihl_bytes < sizeof(*iph) || iph->protocol != IPPROTO_UDP ||
	    (iph->frag_off & bpf_htons(0x1fff)))   /* a non-first fragment has no UDP header */
		return XDP_PASS;
	udph = (void *)iph + ihl_bytes;
	if ((void *)(udph + 1) > data_end)
		return XDP_PASS;

	if (drop_port && udph->dest == bpf_htons(drop_port))
		return named();

	if (drop_odd_seq) {
		hdr = (void *)(udph + 1);
		if ((void *)hdr + XDPLAB_HDR_LEN <= data_end &&
		    hdr->magic == bpf_htonl(XDPLAB_MAGIC) && (bpf_ntohl(hdr->seq) & 1))
			return named();
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
