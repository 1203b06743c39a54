/* busy_pass.bpf.c - XDP_PASS after a known amount of extra work per packet.
 *
 * Mixes the frame's first 8 bytes into a hash for `work_rounds` rounds, then
 * passes the frame.  It exists so that a comparison of two programs has a
 * known answer: busy_pass costs clearly more per packet than pass_all, and
 * more rounds cost more.  The hash is added to a per-CPU counter (`busy_sink`)
 * so that the compiler cannot leave the work out.
 *
 * Globals (program_globals):
 *   work_rounds  __u32  rounds per packet, default 256; at most BUSY_MAX_ROUNDS
 *                       (4096): the verifier needs a bound it can see.
 *
 * Example:  program: programs/busy_pass.bpf.c
 *           program_globals: {work_rounds: 1024}
 * or, as the costlier side of a comparison with the default 256 rounds:
 *           program: [programs/pass_all.bpf.c, programs/busy_pass.bpf.c]
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define BUSY_MAX_ROUNDS 4096

const volatile __u32 work_rounds = 256;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} busy_sink SEC(".maps");

SEC("xdp")
int xdp_busy_pass(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 word = data_end - data, h = 0xcbf29ce484222325ULL;  /* FNV-1a offset basis */
	__u32 i, zero = 0;
	__u64 *sink;

	if (data + sizeof(word) <= data_end)
		__builtin_memcpy(&word, data, sizeof(word));
	/* One byte of the word per round, FNV-1a style: each round depends on the
	 * last, so the rounds cannot be folded into one. */
	for (i = 0; i < BUSY_MAX_ROUNDS; i++) {
		if (i >= work_rounds)
			break;
		h = (h ^ ((word >> ((i & 7) * 8)) & 0xff)) * 0x100000001b3ULL;
	}
	sink = bpf_map_lookup_elem(&busy_sink, &zero);
	if (sink)
		*sink += h;   /* per-CPU: only this CPU writes its slot */
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
