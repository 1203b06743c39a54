"""GET /metrics: the agent's state and the armed session's counters so far, in
the Prometheus text exposition format (version 0.0.4).  Pure: takes what
Agent.state() returns.

Labels fit a Prometheus scrape: none is named `instance` (Prometheus adds its
own), and counters carry `interface` only, so a sweep's trials continue the same
series (each arm restarts them at 0, which Prometheus reads as a counter reset)
instead of making new ones per session; the session's id and trial are labels of
one info gauge, `xdplab_session_info`."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
XDP_HELP = {
    "seen": "frames the XDP program ran on",
    "matched": "frames with the payload header of the session's run ids",
    "features": "feature records submitted to the ring buffer",
    "ringbuf_full": "matched frames whose record found the ring buffer full",
    "parse_errors": "frames whose IPv4/UDP headers ran past the frame's end",
    "foreign_arp": "ARP frames",
    "foreign_port": "UDP to the port without the session's header",
    "foreign_other": "all other frames",
}


def _label(v):
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(state, agent_name):
    lines = []

    def metric(name, kind, help_, samples):
        lines.append("# HELP %s %s" % (name, help_))
        lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            lab = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels.items())
            lines.append("%s%s %s" % (name, "{%s}" % lab if lab else "", value))

    metric("xdplab_agent_info", "gauge", "the agent's identity",
           [({"agent": agent_name, "agent_instance": state["instance"]}, 1)])
    metric("xdplab_agent_sessions_armed_total", "counter", "sessions armed since start",
           [({}, state["sessions_armed_total"])])
    metric("xdplab_agent_programs_loaded", "gauge", "compiled collector instances kept loaded",
           [({}, sum(p["instances"] for p in state["programs_loaded"]))])
    s = state["session"]
    metric("xdplab_session_armed", "gauge", "1 while a session is armed", [({}, 1 if s else 0)])
    if s:
        metric("xdplab_session_info", "gauge", "the armed session (its counters are below)",
               [({"session": s["id"], "trial": s["trial"], "state": s["state"]}, 1)])
    if s:
        ifaces = s["interfaces"]
        for key, help_ in XDP_HELP.items():
            samples = [({"interface": n}, v["xdp"][key])
                       for n, v in ifaces.items() if v["xdp"] is not None]
            if samples:
                metric("xdplab_xdp_%s_total" % key, "counter",
                       help_ + ", since the session was armed", samples)
        samples = [({"interface": n}, v["records"])
                   for n, v in ifaces.items() if v["records"] is not None]
        if samples:
            metric("xdplab_features_received_total", "counter",
                   "feature records the agent has read, since the session was armed", samples)
        names = sorted({k for v in ifaces.values() for k in v["nic"]})
        for k in names:
            metric("xdplab_nic_%s_total" % k, "counter",
                   "/sys/class/net/<if>/statistics/%s since the session was armed" % k,
                   [({"interface": n}, v["nic"][k])
                    for n, v in ifaces.items() if k in v["nic"]])
    return "\n".join(lines) + "\n"
