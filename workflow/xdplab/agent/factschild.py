"""Asked by the agent at start (bpf.bcc_facts) as `python3 -m xdplab.agent.factschild`:
prints {"bcc": BCC's version, "maps": [the libLLVM path importing bcc maps]} as JSON.
Importing bcc in the agent itself would map LLVM into it."""

import json


def main():
    import bcc
    with open("/proc/self/maps") as f:
        llvm = [line.split()[-1] for line in f if "/libLLVM" in line]
    print(json.dumps({"bcc": getattr(bcc, "__version__", "unknown"), "maps": llvm[:1]}))


if __name__ == "__main__":
    main()
