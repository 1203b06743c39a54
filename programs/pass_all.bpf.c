/* pass_all.bpf.c - the baseline: XDP_PASS for every frame.
 *
 * The cheapest program there is: what an XDP program costs before it does
 * anything (the hook, the call, the verdict).  Compare your program with it to
 * see what your own work adds.
 *
 * Globals (program_globals): none.
 *
 * Build: clang -O2 -g -Wall -Werror -target bpf -I bpf \
 *            -I /usr/include/$(uname -m)-linux-gnu -c programs/pass_all.bpf.c -o pass_all.bpf.o
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
