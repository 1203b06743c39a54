"""xdplab DUT agent: arms the XDP collector on the device under test over REST.

Runs as root on the device under test (DUT) with the system Python that has
BCC.  Built into one file, dist/xdplab-agent.pyz (`make agent`); also runs as
`python3 -m xdplab.agent` with workflow/ on PYTHONPATH.  The REST API is
documented in API.md beside this file.

Modules, one concern each:
    __main__     command line, signals, the state-directory lock
    server       HTTP routes, token check, body and connection limits
    api          request validation (pure)
    service      the agent: program cache, one armed session, bookkeeping
    session      one session: arm and teardown in order (ExitStack)
    iface        one interface of a session: checks, attach, counter snapshots
    results      a session's results from its snapshots (pure)
    bpfsrc       collector source and header: inlining and parsing (pure)
    bpf          compile (in a child), load, bpf_link attach, run-time stats, counters
    children     the agent's modules run as child processes (python3 -m)
    compilechild the child that compiles with BCC and hands over descriptors
    factschild   the child that tells BCC's version and LLVM's path
    checkchild   the child that checks a capture (pcapcheck)
    userprog     the program under test when it is the user's: store, loading, verdicts
    bpfobject    a user's BPF object loaded through libbpf (ctypes)
    libbpfobj    libbpf's object calls, errors and messages (ctypes)
    btf          a BPF object's globals and their types, from its BTF
    exceptions   XDP exceptions counted from the xdp:xdp_exception tracepoint
    capture      tcpdump (spawned from one long-lived thread)
    features     ring-buffer records: counts, duplicates, latency and gaps
    hist         bounded log-linear histogram
    timeseries   counters sampled ten times a second while armed
    sysstats     NIC counters, /proc, interface facts
    environment  GET /environment: what the DUT runs
    metrics      Prometheus text (pure)
"""

AGENT = "xdplab-agent/2"
TOKEN_HEADER = "X-Xdplab-Token"
