/* xdplab.h - what the XDP collector shares with user space, defined once.
 *
 * Included by bpf/collector.bpf.c (compiled by BCC on the device under test)
 * and read by the agent (workflow/xdplab/agent/bpfsrc.py): the agent decodes
 * ring-buffer records from `struct xdplab_feature`, takes the counter indices
 * from `enum xdplab_counter` and the run-id limit from XDPLAB_MAX_RUN_IDS
 * below.  The agent inlines this header into the source it hands to BCC.  The generator
 * (workflow/xdplab/generator.py) runs on the source host with the Python
 * standard library only, so it mirrors the payload header layout; a unit test
 * checks the two agree.
 */
#ifndef XDPLAB_H
#define XDPLAB_H

/* First bytes of every UDP payload the generator sends ("XDLB"). */
#define XDPLAB_MAGIC 0x58444c42

/* Payload header length in bytes.  18 bytes is the smallest UDP payload of a
 * 64-byte Ethernet frame (14 Ethernet + 20 IPv4 + 8 UDP + 18 + 4 FCS), so the
 * header fits in every frame size the workflow allows. */
#define XDPLAB_HDR_LEN 18

/* Payload header, all fields in network byte order, no padding:
 *   offset 0  magic    u32  XDPLAB_MAGIC
 *   offset 4  seq      u32  sequence number within the run, from 0
 *   offset 8  send_ns  u64  CLOCK_MONOTONIC on the source just before send
 *   offset 16 run_id   u16  identifies the trial's run
 */
struct xdplab_payload_hdr {
	__be32 magic;
	__be32 seq;
	__be64 send_ns;
	__be16 run_id;
} __attribute__((packed));

/* One record per matched packet, sent through the BPF ring buffer.
 * Addresses are as on the wire (network order); everything else is host order. */
struct xdplab_feature {
	__u64 arrival_ns; /* bpf_ktime_get_ns() when XDP ran: CLOCK_MONOTONIC of the DUT */
	__u64 send_ns;    /* from the payload header */
	__u32 saddr;
	__u32 daddr;
	__u32 seq;
	__u16 sport;
	__u16 dport;
	__u16 frame_len;  /* bytes from the Ethernet header to the end of the frame, no FCS */
	__u16 run_id;
	__u32 cpu;        /* CPU that ran the XDP program */
};

/* Records are staged per CPU and handed to the ring buffer in batches: one
 * bpf_ringbuf_output() of up to XDPLAB_BATCH records (a power of two) instead
 * of a reserve and a submit per packet.  A CPU's batch also goes out as soon as
 * its oldest staged record is XDPLAB_FLUSH_NS old when the next record
 * arrives, so at low rates records reach the consumer within about a packet
 * interval.  What is still staged when the program is detached is read from
 * the `stage` map by the agent (every CPU's first n records), so every record
 * arrives.  A ring-buffer record is therefore 1..XDPLAB_BATCH features back to
 * back, never a partial one. */
#define XDPLAB_BATCH 64
#define XDPLAB_FLUSH_NS 1000000

/* The per-CPU staging area (one-entry per-CPU array `stage`). */
struct xdplab_stage {
	__u32 n;          /* records staged in recs[0 .. n-1] */
	__u32 pad;
	struct xdplab_feature recs[XDPLAB_BATCH];
};

/* A session matches run ids first .. first+count-1 (count <= XDPLAB_MAX_RUN_IDS).
 * The agent writes them into the one-entry `run_range` array map at arm as a
 * u64: first in the low 32 bits, count in the high 32 bits (one lookup in
 * the hot path, and no recompile per session).  `matched_by_run` is a per-CPU
 * array of XDPLAB_MAX_RUN_IDS counters indexed by run_id - first. */
#define XDPLAB_MAX_RUN_IDS 16

/* Per-CPU counters, indices into the `counters` array.  Summed over all
 * possible CPUs in user space.  Every frame lands in exactly one of
 * MATCHED, FOREIGN_ARP, FOREIGN_PORT, FOREIGN_OTHER, PARSE_ERRORS, so
 * SEEN = MATCHED + FOREIGN_ARP + FOREIGN_PORT + FOREIGN_OTHER + PARSE_ERRORS. */
enum xdplab_counter {
	XDPLAB_SEEN = 0,      /* every frame the program ran on */
	XDPLAB_IPV4_UDP,      /* parsed as IPv4 + UDP (first fragments included) */
	XDPLAB_MATCHED,       /* UDP to the port, magic, run id in the session's range */
	XDPLAB_FEATURES,      /* feature records exported: in the ring buffer or staged
			       * (the agent reads staged ones at disarm) */
	XDPLAB_RINGBUF_FULL,  /* matched, but the ring buffer had no room for the batch
			       * holding the record: record lost (FEATURES + RINGBUF_FULL
			       * = MATCHED) */
	XDPLAB_PARSE_ERRORS,  /* claimed IPv4/UDP but a header ran past the frame's end */
	XDPLAB_FOREIGN_ARP,   /* ARP frames */
	XDPLAB_FOREIGN_PORT,  /* IPv4/UDP to the port: short payload, no magic, or a run id
			       * outside the session's range */
	XDPLAB_FOREIGN_OTHER, /* everything else: runts, other ethertypes (VLAN too), other
			       * IP protocols, non-first fragments, other UDP ports */
	XDPLAB_CHAIN_MISSED,  /* chain mode: the tail call to the program under test failed
			       * (empty slot), so the collector passed the frame itself;
			       * not one of the classes above */
	XDPLAB_NR_COUNTERS,
};

/* XDP exceptions (the kernel's xdp:xdp_exception tracepoint), counted by
 * exceptions.bpf.c per attached program and action: the driver raises one for
 * XDP_ABORTED, for an action value XDP does not know (counted under
 * XDPLAB_ACT_INVALID), and for an XDP_TX or XDP_REDIRECT it could not carry out.
 * prog_id is the program attached to the interface (the collector, when it hands
 * frames on by tail call). */
#define XDPLAB_ACT_INVALID 5
struct xdplab_exception_key {
	__u32 prog_id;
	__u32 act;        /* XDP_ABORTED .. XDP_REDIRECT, or XDPLAB_ACT_INVALID */
};

#endif /* XDPLAB_H */
