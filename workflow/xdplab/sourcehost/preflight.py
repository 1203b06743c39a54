"""The source check before a run (``xdplab-source.pyz preflight``), in one SSH command:
what the host is and what its test interface has, generators of ours left running by
an earlier run (stopped, their files removed), and a ping to the DUT over the test link
(which also leaves the DUT's address resolved in the neighbour table: a sender whose
neighbour is unresolved sees every sendto succeed while the kernel drops the packets),
and under "facts" what xdplab.preflight decides on (sourcehost/facts.preflight_facts:
boot id, root, the interface's MTU and speed, the DUT's neighbour entry, the clock).

    python3 xdplab-source.pyz preflight IFACE DUT_ADDRESS REMOTE_PREFIX ADDRESS

DUT_ADDRESS may be empty (no ping); ADDRESS is the configured source address or
"auto".  Prints one JSON object; the controller's side is ``xdplab.source.preflight``.
"""

import glob
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time

STOP_WAIT_S = 2.0


def run(argv):
    """(exit status or None, its output) of a command; never raises."""
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.returncode, r.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(e)


def interface(out, iface):
    """Whether iface exists, its IPv4 addresses and MAC (ip and /sys, or ifconfig on macOS)."""
    try:
        socket.if_nametoindex(iface)
        out["exists"] = True
    except OSError:
        pass
    if out["exists"] and os.path.isdir("/sys/class/net"):
        code, text = run(["ip", "-j", "-4", "addr", "show", "dev", iface])
        if code == 0:
            for link in json.loads(text or "[]"):
                out["ipv4"] += ["%s/%s" % (a["local"], a["prefixlen"]) for a in link.get("addr_info", [])]
        try:
            with open("/sys/class/net/%s/address" % iface) as f:
                out["mac"] = f.read().strip()
        except OSError:
            pass
    elif out["exists"]:
        code, text = run(["ifconfig", iface])
        for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+) netmask (0x[0-9a-f]+)", text):
            out["ipv4"].append("%s/%d" % (m.group(1), bin(int(m.group(2), 16)).count("1")))
        m = re.search(r"ether ([0-9a-f:]{17})", text)
        out["mac"] = m.group(1) if m else None


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def stop_generators(prefix):
    """Stop every generator of ours (SIGTERM, SIGKILL after STOP_WAIT_S) and remove its
    files; returns what was stopped ("<pid> <command line>")."""
    code, text = run(["ps", "-axo", "pid=,command="])
    ours, stopped = [], []
    # not this program's own line; a trafgen the generator started reads <generator>.trafgen-*.cfg
    generator = re.compile(r"(^|\s)" + re.escape(prefix) + r"\d+\.pyz?(\s|$|\.trafgen-)")
    for line in text.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if generator.search(cmd) and pid.isdigit() and int(pid) != os.getpid():
            ours.append((int(pid), cmd.strip()))
    for pid, cmd in ours:
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append("%d %s" % (pid, cmd))
        except OSError:
            pass
    deadline = time.time() + STOP_WAIT_S
    while ours and time.time() < deadline:
        ours = [(p, c) for p, c in ours if _alive(p)]
        if ours:
            time.sleep(0.1)
    for pid, cmd in ours:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for pattern in ("*.py", "*.pyz", "*.py.trafgen-*.cfg", "*.pyz.trafgen-*.cfg"):
        for path in glob.glob(prefix + pattern):
            try:
                os.unlink(path)
            except OSError:
                pass
    return stopped


def ping(system, iface, dut, address):
    if system == "Darwin":
        argv = ["ping", "-c", "1", "-t", "2"] + (["-S", address] if address != "auto" else []) + [dut]
    else:
        argv = ["ping", "-c", "1", "-W", "2", "-I", iface, dut]
    code, text = run(argv)
    lines = [line for line in text.splitlines() if line.strip()]
    return {"ok": code == 0, "argv": argv, "said": lines[-2:]}


def main(argv):
    iface, dut, prefix, address = argv[0], argv[1], argv[2], argv[3]
    out = {"hostname": platform.node(), "python": sys.version.split()[0], "system": platform.system(),
           "iface": iface, "exists": False, "ipv4": [], "mac": None, "stopped": [], "ping": None}
    interface(out, iface)
    out["stopped"] = stop_generators(prefix)
    if dut:
        out["ping"] = ping(out["system"], iface, dut, address)
    from . import facts   # after the ping, which leaves the DUT's neighbour entry resolved
    out["facts"] = facts.preflight_facts(out["system"], iface, dut)
    print(json.dumps(out))
    return 0
