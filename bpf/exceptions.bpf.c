/* exceptions.bpf.c - counts XDP exceptions, compiled by BCC on the DUT.
 *
 * While a user's program is under test, the agent attaches this program to the
 * kernel's xdp:xdp_exception tracepoint.  A driver raises that tracepoint when
 * the program attached to an interface returns XDP_ABORTED or an action value
 * XDP does not know, and when an XDP_TX or XDP_REDIRECT fails.  Drivers count
 * XDP_ABORTED among their XDP drops (veth does), so without this count an
 * aborted packet would read as a dropped one.  The per-packet path of XDP is
 * untouched: the tracepoint fires on exceptions only.
 *
 * Counts go to the `exceptions` hash keyed by (program id, action) (struct
 * xdplab_exception_key in xdplab.h); the agent reads the keys of the programs
 * it observes at arm and at disarm.
 */
#include <uapi/linux/bpf.h>

#include "xdplab.h"

BPF_HASH(exceptions, struct xdplab_exception_key, u64, 1024);

TRACEPOINT_PROBE(xdp, xdp_exception)
{
	struct xdplab_exception_key key = {};
	u64 zero = 0, *n;

	key.prog_id = args->prog_id;
	key.act = args->act <= XDP_REDIRECT ? args->act : XDPLAB_ACT_INVALID;
	n = exceptions.lookup_or_try_init(&key, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}
