"""xdplab DUT agent: arms the XDP collector on the device under test over REST.

Runs as root on the device under test (DUT) with the system Python that has
BCC.  Built into one file, dist/xdplab-agent.pyz (`make agent`); also runs as
`python3 -m xdplab.agent` with workflow/ on PYTHONPATH.  The REST API is
documented in API.md beside this file.

Modules, one concern each:
    __main__  command line, signals, the state-directory lock
    server    HTTP routes, token check, body and connection limits
    api       request validation (pure)
    service   the agent: program cache, one armed session, bookkeeping
    session   one session: arm and teardown (ExitStack), results (pure)
    bpfsrc    collector source and header: inlining and parsing (pure)
    bpf       compile, load, bpf_link attach, run-time stats, counters
    capture   tcpdump (spawned from one long-lived thread)
    features  ring-buffer records: counts, duplicates, latency and gaps
    hist      bounded log-linear histogram
    sysstats  NIC counters, /proc, interface facts
    metrics   Prometheus text (pure)
"""

AGENT = "xdplab-agent/2"
TOKEN_HEADER = "X-Xdplab-Token"
