"""The compile child, run by the agent once per program (bpf.compile_in_child) as

    python3 -m xdplab.agent.compilechild FD      < request

It compiles BPF C with BCC, loads it through the verifier, hands the program's and
maps' file descriptors to the agent over the Unix socket FD (SCM_RIGHTS), and exits:
LLVM's memory peak goes with it.  The agent itself never imports bcc.

Request (JSON on stdin): {"text", "cflags", "prog", "prog_type", "maps", "tracepoint"}.
Sent with the descriptors (program first, then the maps in the request's order), as
JSON: {"maps", "insn_count", "vm_hwm_kib"} and "tracepoint_id" when a tracepoint
("category/name") was named.
"""

import ctypes
import json
import os
import socket
import sys

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
TRACEFS = "/sys/kernel/tracing"


def tracepoint_id(tracepoint):
    """The tracepoint's id.  BCC reads the tracepoint's format from tracefs.  `ip netns
    exec` gives a fresh /sys without it: mount it in a mount namespace of this process's
    own, which goes when the process does (nothing is left mounted)."""
    events = [d for d in (TRACEFS + "/events", "/sys/kernel/debug/tracing/events")
              if os.path.isdir(d)]
    if not events:
        libc = ctypes.CDLL(None, use_errno=True)
        if (libc.unshare(CLONE_NEWNS) != 0
                or libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0
                or libc.mount(b"tracefs", TRACEFS.encode(), b"tracefs", 0, None) != 0):
            sys.exit("mounting tracefs for the tracepoint: " + os.strerror(ctypes.get_errno()))
        events = [TRACEFS + "/events"]
    with open(os.path.join(events[0], tracepoint, "id")) as f:
        return int(f.read())


def compile_and_load(req):
    """(meta, [program fd, map fds...]) of the request's program, compiled and loaded."""
    from bcc import BPF, libbcc
    b = BPF(text=req["text"].encode(), cflags=req["cflags"])
    fn = b.load_func(req["prog"], getattr(BPF, req["prog_type"]))
    try:
        insns = libbcc.lib.bpf_function_size(b.module, req["prog"].encode()) // 8
    except Exception:
        insns = len(b.dump_func(req["prog"])) // 8
    with open("/proc/self/status") as f:
        hwm = [line.split()[1] for line in f if line.startswith("VmHWM")]
    meta = {"insn_count": insns, "vm_hwm_kib": int(hwm[0]) if hwm else None}
    return meta, [fn.fd] + [b[m].map_fd for m in req["maps"]]


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    req = json.loads(sys.stdin.read())
    meta = {"maps": req["maps"]}
    if req.get("tracepoint"):
        meta["tracepoint_id"] = tracepoint_id(req["tracepoint"])
    loaded, fds = compile_and_load(req)
    meta.update(loaded)
    socket.send_fds(sock, [json.dumps(meta).encode()], fds)


if __name__ == "__main__":
    main()
