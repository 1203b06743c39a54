"""A capture check, run by the agent (service.Agent.capture_check) as

    python3 -m xdplab.agent.checkchild '{"pcap_path": ..., "run_id": ..., ...}'

pcapcheck.verify_capture's keyword arguments as JSON; prints its result as JSON, or
{"error": ...} for an unreadable or malformed capture.  In a child so that its bitmap
(1 bit per scheduled packet) and read buffers never count in the agent's memory."""

import json
import sys


def main():
    from xdplab import pcapcheck   # beside the agent, in the pyz and in the repository
    try:
        out = pcapcheck.verify_capture(**json.loads(sys.argv[1]))
    except (OSError, ValueError) as e:
        out = {"error": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
