/* collector.bpf.c - XDP collector of xdplab, compiled by BCC on the DUT.
 *
 * Runs on every frame the device under test receives on a measured interface
 * and always passes it on (XDP_PASS): it observes, never drops.  Every frame
 * is counted once in per-CPU counters by what it is (see enum xdplab_counter
 * in xdplab.h); for each UDP datagram to XDPLAB_PORT whose payload carries the
 * xdplab magic and a run id of the armed session it exports one
 * `struct xdplab_feature` record: staged per CPU and sent through a BPF ring
 * buffer in batches (see XDPLAB_BATCH in xdplab.h).
 *
 * Compiled by the agent (workflow/xdplab/agent/bpf.py) with
 *     cflags = ["-DXDPLAB_PORT=<port>"
 *               (, "-DXDPLAB_RING_PAGES=<pages>" when asked for)
 *               (, "-DXDPLAB_COUNT_ONLY" for collector "counters")]
 *               (, "-DXDPLAB_CHAIN" when a user's program is under test)]
 * These are load-time constants, not map lookups.
 *
 * Chain mode (XDPLAB_CHAIN): the program under test is the user's.  The collector
 * runs first on every frame, counts and records it as always, then hands the frame
 * to the user's program by a tail call through the one-slot `chain` program array,
 * which the agent fills with that program at arm.  A tail call does not return: the
 * user's program's verdict is the frame's.  (The other way to see a verdict, fexit on
 * the program as xdpdump does, needs BPF trampolines, which some kernels refuse.)
 * If the slot is empty the tail call falls through, the collector passes the frame
 * and counts it in XDPLAB_CHAIN_MISSED.  The session's run-id range
 * is the one thing that changes per session without a recompile: it is read
 * from the `run_range` array map, and only for datagrams to the port (an
 * array-map lookup, which the verifier inlines).
 *
 * Shared definitions (payload header, feature record, counter indices, run-id
 * limit) live in xdplab.h and nowhere else.
 */
#include <uapi/linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>

#include "xdplab.h"

#ifndef XDPLAB_PORT
#error "XDPLAB_PORT must be given as a cflag: -DXDPLAB_PORT=<udp port>"
#endif

#if XDPLAB_PORT < 1 || XDPLAB_PORT > 65535
#error "XDPLAB_PORT must be a UDP port number, 1..65535"
#endif

BPF_PERCPU_ARRAY(counters, u64, XDPLAB_NR_COUNTERS);
#ifdef XDPLAB_CHAIN
BPF_PROG_ARRAY(chain, 1);
#endif
BPF_PERCPU_ARRAY(matched_by_run, u64, XDPLAB_MAX_RUN_IDS);
/* low 32 bits: first run id; high 32 bits: how many (0 = match nothing) */
BPF_ARRAY(run_range, u64, 1);

#ifndef XDPLAB_COUNT_ONLY
/* Ring size in pages: a feature is 40 bytes, and a batch of up to
 * XDPLAB_BATCH of them has one 8-byte ring header.  The default 1<<11 pages
 * (8 MiB on 4 KiB pages) hold ~209k records, i.e. ~2 s at 100k pps with no
 * consumer at all.  The agent consumes every ~2 ms, so in steady state only a
 * few hundred records are in flight; the headroom covers a consumer stalled by
 * the GIL or the scheduler for well over a second.  A session may ask for
 * another size (the agent passes -DXDPLAB_RING_PAGES; one page still holds a
 * whole batch); the tests use a tiny ring to make a stalled consumer overflow
 * it.  A batch the ring has no room for is counted record by record
 * (XDPLAB_RINGBUF_FULL), never silent. */
#ifndef XDPLAB_RING_PAGES
#define XDPLAB_RING_PAGES (1 << 11)
#endif

#if XDPLAB_RING_PAGES < 1 || XDPLAB_RING_PAGES > 16384 || \
	(XDPLAB_RING_PAGES & (XDPLAB_RING_PAGES - 1)) != 0
#error "XDPLAB_RING_PAGES must be a power of two, 1..16384"
#endif

BPF_RINGBUF_OUTPUT(events, XDPLAB_RING_PAGES);
BPF_PERCPU_ARRAY(stage, struct xdplab_stage, 1);
#endif /* XDPLAB_COUNT_ONLY */

/* Per-CPU slot: only this CPU writes it while the program runs (XDP runs with
 * preemption/migration disabled), so a plain increment is safe. */
static __always_inline void count(u32 idx)
{
	u64 *v = counters.lookup(&idx);

	if (v)
		(*v)++;
}

static __always_inline void collect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udph;
	struct xdplab_payload_hdr *hdr;
	u32 ihl_bytes, zero = 0, slot;
	u64 *range, *by_run;

	count(XDPLAB_SEEN);

	/* A runt frame does not claim to be anything: foreign, not a parse error. */
	if ((void *)(eth + 1) > data_end) {
		count(XDPLAB_FOREIGN_OTHER);
		return;
	}
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		count(XDPLAB_FOREIGN_ARP);
		return;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		count(XDPLAB_FOREIGN_OTHER);
		return;
	}

	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end) {
		count(XDPLAB_PARSE_ERRORS);
		return;
	}
	/* ihl counts 32-bit words; options make the header longer than 20. */
	ihl_bytes = iph->ihl * 4;
	if (ihl_bytes < sizeof(*iph)) {
		count(XDPLAB_PARSE_ERRORS);
		return;
	}
	/* Other protocols, and non-first fragments (they carry no UDP header). */
	if (iph->protocol != IPPROTO_UDP || (iph->frag_off & bpf_htons(0x1fff))) {
		count(XDPLAB_FOREIGN_OTHER);
		return;
	}

	udph = (void *)iph + ihl_bytes;
	if ((void *)(udph + 1) > data_end) {
		count(XDPLAB_PARSE_ERRORS);
		return;
	}
	count(XDPLAB_IPV4_UDP);

	if (udph->dest != bpf_htons(XDPLAB_PORT)) {
		count(XDPLAB_FOREIGN_OTHER);
		return;
	}
	hdr = (void *)(udph + 1);
	if ((void *)hdr + XDPLAB_HDR_LEN > data_end || hdr->magic != bpf_htonl(XDPLAB_MAGIC)) {
		count(XDPLAB_FOREIGN_PORT);
		return;
	}
	range = run_range.lookup(&zero);
	/* unsigned: a run id below the first wraps to a large slot */
	slot = (u32)bpf_ntohs(hdr->run_id) - (u32)(range ? *range : 0);
	if (!range || slot >= (u32)(*range >> 32) || slot >= XDPLAB_MAX_RUN_IDS) {
		count(XDPLAB_FOREIGN_PORT);
		return;
	}
	count(XDPLAB_MATCHED);
	by_run = matched_by_run.lookup(&slot);
	if (by_run)
		(*by_run)++;

#ifndef XDPLAB_COUNT_ONLY
	{
		struct xdplab_stage *st = stage.lookup(&zero);
		struct xdplab_feature *rec, *batch;
		u32 n;

		if (!st) {               /* cannot happen (key 0 of a 1-entry array) */
			count(XDPLAB_RINGBUF_FULL);
			return;
		}
		/* n < XDPLAB_BATCH always holds; the mask tells the verifier so. */
		n = st->n & (XDPLAB_BATCH - 1);
		rec = &st->recs[n];
		rec->arrival_ns = bpf_ktime_get_ns();
		rec->send_ns = __builtin_bswap64(hdr->send_ns);
		rec->saddr = iph->saddr;
		rec->daddr = iph->daddr;
		rec->seq = bpf_ntohl(hdr->seq);
		rec->sport = bpf_ntohs(udph->source);
		rec->dport = bpf_ntohs(udph->dest);
		rec->frame_len = (u16)(data_end - data);
		rec->run_id = bpf_ntohs(hdr->run_id);
		rec->cpu = bpf_get_smp_processor_id();
		count(XDPLAB_FEATURES);
		n++;
		if (n < XDPLAB_BATCH &&
		    rec->arrival_ns - st->recs[0].arrival_ns < XDPLAB_FLUSH_NS) {
			st->n = n;
			return;
		}
		st->n = 0;
		batch = st->recs;    /* (BCC's rewriter fails on st->recs as an argument) */
		/* No wakeup: the agent polls every few ms.  Waking the consumer on
		 * every submit cost ~2,500 ns/pkt on this machine versus ~220 ns
		 * without.  The ring takes the batch whole or not at all. */
		if (events.ringbuf_output(batch, n * sizeof(*batch), BPF_RB_NO_WAKEUP)) {
			/* per-CPU: this CPU counted these n records as features */
			u32 idx = XDPLAB_FEATURES;
			u64 *v = counters.lookup(&idx);

			if (v)
				*v -= n;
			idx = XDPLAB_RINGBUF_FULL;
			v = counters.lookup(&idx);
			if (v)
				*v += n;
		}
	}
#endif
	return;
}

int xdplab_collect(struct xdp_md *ctx)
{
	collect(ctx);
#ifdef XDPLAB_CHAIN
	chain.call(ctx, 0);      /* does not return when the slot holds the program */
	count(XDPLAB_CHAIN_MISSED);
#endif
	return XDP_PASS;
}
