"""The trafgen backend (``--backend trafgen``, Linux, root): netsniff-ng's trafgen
sends the run, one process per phase (warm-up, then measured), and the report
is the same as the Python sender's, with trafgen's own figures beside it.
"""

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

from . import control, report, sockets
from .counters import WindowStart, counters_report, read_counters, read_text, wait_drained
from .stream import END_GRACE_S
from .wire import HEADER_LEN, MAGIC, UDP_HLEN, mac_text

# How.
#
# --backend trafgen hands the sending to netsniff-ng's trafgen (measured 0.6.8),
# one process per phase (warm-up, then measured), and reports the same JSON.
#
# The payload header.  trafgen's runtime counters are one byte wide (no carry),
# and a protocol header after udp() is refused (an assertion in its
# udp_set_next_proto), but a protocol *field* counts as a 32-bit big-endian
# integer with carry (dinc).  So the UDP header and the first 12 payload bytes
# are written as a second IPv4 header ("IP in IP" to trafgen, never on the
# wire as such: the outer header says UDP), whose fields land on:
#
#   inner ver/ihl, tos  -> UDP source port        inner ttl, proto, csum -> magic
#   inner len           -> UDP destination port   inner saddr            -> seq (dinc: +1 per packet)
#   inner id            -> UDP length             inner daddr            -> send_ns, upper 4 bytes (0)
#   inner flags/frag    -> UDP checksum (0: none)
#
# followed by raw bytes: send_ns's lower 4 bytes (0), run_id, zeros.  Every
# inner field is given, so trafgen computes none of them (its checksum
# included: measured, the magic stays intact while saddr counts).  send_ns
# stays 0: trafgen cannot write a send time.
#
# Pacing.  trafgen --rate Npps sends through sendto() and, measured here, each
# second's N packets back to back at the start of that second (1000 pps: 1000
# packets within 6 ms, then 994 ms idle): the mean rate is exact, the spacing
# is one burst per second.  "pacing" in the report says so.  It runs one
# process (trafgen's --rate implies it), so --threads is 1.
#
# No stretch.  The measured window starts when trafgen says "Running!" (read
# from its stdout at once) and lasts --duration; trafgen gets --num scheduled
# packets, and is stopped with SIGINT (its process group: trafgen forks its
# sender) at the window's end plus END_GRACE_S if it has not finished.
# sent is trafgen's own count ("N packets outgoing", printed at its exit);
# the NIC's tx_packets delta over each phase is reported beside it.

TRAFGEN_READY_S = 5.0  # trafgen must say "Running!" within this long
TRAFGEN_STOP_S = 2.0  # after SIGINT, this long before SIGKILL
# sent_per_s samples this long before each whole second: trafgen's seconds (and
# its first packet) begin ~2 ms before its "Running!" reaches us (measured).
TRAFGEN_SAMPLE_LEAD_S = 0.02


def trafgen_config(dst_mac, src_mac, src_ip, dst_ip, sport, dport, size, run_id):
    """trafgen's packet configuration for one run: the xdplab payload header with
    seq counting from 0 (see the comment above)."""
    udp_len = UDP_HLEN + size
    return ("{\n"
            "  eth(da=%s, sa=%s),\n"
            "  ipv4(sa=%s, da=%s, ttl=64, df, id=0, proto=17),\n"
            "  /* UDP header and payload bytes 0-11, written as a second IPv4 header (32-bit seq counter) */\n"
            "  ipv4(ver=%d, ihl=%d, tos=%d, len=%d, id=%d, frag=0, ttl=%d, proto=%d, csum=%d,\n"
            "       sa=0.0.0.0, sa=dinc(), da=0.0.0.0),\n"
            "  c32(0), c16(%d)%s\n"
            "}\n") % (mac_text(dst_mac), mac_text(src_mac), src_ip, dst_ip, sport >> 12, (sport >> 8) & 0xF,
                      sport & 0xFF, dport, udp_len, MAGIC >> 24, (MAGIC >> 16) & 0xFF, MAGIC & 0xFFFF, run_id,
                      ",\n  fill(0x00, %d)" % (size - HEADER_LEN) if size > HEADER_LEN else "")


def parse_trafgen_stats(text):
    """trafgen's exit summary: {"packets", "bytes", "cpu_s", "per_cpu": [{"cpu", "packets", "s"}]}
    with None where a line is missing (killed before printing)."""
    out = {"packets": None, "bytes": None, "per_cpu": []}
    m = re.search(r"^\s*(\d+) packets outgoing", text, re.M)
    if m:
        out["packets"] = int(m.group(1))
    m = re.search(r"^\s*(\d+) bytes outgoing", text, re.M)
    if m:
        out["bytes"] = int(m.group(1))
    for m in re.finditer(r"^\s*(\d+) sec, (\d+) usec on CPU(\d+) \((\d+) packets\)", text, re.M):
        out["per_cpu"].append({"cpu": int(m.group(3)), "packets": int(m.group(4)),
                               "s": int(m.group(1)) + int(m.group(2)) / 1e6})
    return out


def trafgen_argv(trafgen, iface, conf, num, pps):
    """One phase's command line: --num packets at --rate pps, one process, no
    change to the host's socket memory sysctls or the NIC's IRQ affinity."""
    return [trafgen, "--dev", iface, "--conf", conf, "--num", str(num), "--rate", "%dpps" % pps, "--cpus", "1",
            "--no-sock-mem", "--notouch-irq"]


def _nic_tx(iface):
    v = read_text("/sys/class/net/%s/statistics/tx_packets" % iface)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class TrafgenPhase(object):
    """One trafgen process: started, read until "Running!", stopped at its deadline."""

    def __init__(self, argv):
        self.argv = argv
        self.proc = None
        self.out = b""
        self.err = b""
        self.ready_pc = None
        self.end_pc = None
        self.stopped = False  # SIGINT sent by us
        self.killed = False

    def start(self, poll_stop):
        """Start and wait for "Running!"; returns an error message or None."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        limit = time.perf_counter() + TRAFGEN_READY_S
        while self.ready_pc is None:
            self._read(0.005)
            if b"Running!" in self.out:
                self.ready_pc = time.perf_counter()
                return None
            if self.proc.poll() is not None:
                self._read(0)
                self.end_pc = time.perf_counter()
                return "trafgen exited with %s before sending: %s" % (
                    self.proc.returncode, (self.err or self.out).decode("utf-8", "replace").strip()[-300:])
            if time.perf_counter() > limit or poll_stop():
                self.stop()
                return "trafgen did not start sending within %g s" % TRAFGEN_READY_S
        return None

    def _read(self, wait):
        fds = [f for f in (self.proc.stdout, self.proc.stderr) if f is not None]
        try:
            ready, _, _ = select.select(fds, [], [], wait)
        except (OSError, ValueError):
            return
        for f in ready:
            try:
                data = os.read(f.fileno(), 65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if f is self.proc.stdout:
                self.out += data
            else:
                self.err = (self.err + data)[-65536:]

    def done(self):
        if self.proc.poll() is None:
            return False
        if self.end_pc is None:
            self.end_pc = time.perf_counter()
        return True

    def stop(self):
        """SIGINT to trafgen's process group (it prints its counts and exits), SIGKILL
        if it has not ended within TRAFGEN_STOP_S; then collect its output."""
        if self.proc.poll() is None:
            self.stopped = True
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except OSError:
                pass
            limit = time.perf_counter() + TRAFGEN_STOP_S
            while self.proc.poll() is None and time.perf_counter() < limit:
                self._read(0.01)
            if self.proc.poll() is None:
                self.killed = True
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.wait()
        if self.end_pc is None:
            self.end_pc = time.perf_counter()
        self.finish()

    def finish(self):
        self.proc.wait()
        while True:
            before = len(self.out) + len(self.err)
            self._read(0)
            if len(self.out) + len(self.err) == before:
                break
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def report(self):
        text = self.out.decode("utf-8", "replace")
        stats = parse_trafgen_stats(text)
        return {"argv": self.argv, "exit_status": self.proc.returncode if self.proc else None,
                "stopped_by_sigint": self.stopped, "killed": self.killed, "stats": stats,
                "stderr": self.err.decode("utf-8", "replace").strip()[-500:] or None}


def _prepare(args):
    """Checked before anything runs: the interface, the source address, a reserved source
    port, trafgen's version.  Returns (src_mac, src_ip, the reserving socket, trafgen's version)."""
    src_mac, src_ip = sockets.packet_source(args.iface, args.src, args.size, "--backend trafgen")
    try:
        keep = sockets.open_udp(src_ip)  # reserves the source port: no other program's traffic shares the flow
    except OSError as e:
        control.die("--src %s cannot be bound: %s" % (src_ip, e))
    version = None
    try:
        r = subprocess.run([args.trafgen, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=5)
        version = r.stdout.decode("utf-8", "replace").strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        keep.close()
        control.die("--backend trafgen: cannot run %s" % args.trafgen)
    return src_mac, src_ip, keep, version


def _phases(args):
    """(name, run id, scheduled packets, duration) of each trafgen process, in order."""
    phases = []
    if args.warmup_s > 0:
        phases.append(("warmup", args.warmup_run_id, args.warmup_scheduled, float(args.warmup_s)))
    phases.append(("measured", args.run_id, args.scheduled, float(args.duration)))
    return phases


def _write_configs(args, phases, src_mac, src_ip, sport):
    """{phase name: configuration file}.  Uploaded as /tmp/xdplab-generator-<run_id>.pyz,
    the configurations go beside it, named after it: the controller's cleanup finds
    (pgrep -f) and removes them by that name."""
    me = os.path.abspath(sys.argv[0] or "generator")
    tag = os.path.basename(me) + ".trafgen-"
    ours = re.match(r"xdplab\d*-generator-", os.path.basename(me))   # an embedded instance's: xdplab<k>-
    conf_dir = os.path.dirname(me) if ours else None
    confs = {}
    for name, run_id, _, _ in phases:
        fd, path = tempfile.mkstemp(prefix=tag + name + "-", suffix=".cfg", dir=conf_dir)
        with os.fdopen(fd, "w") as f:
            f.write(trafgen_config(args.dst_mac, src_mac, src_ip, args.dst, sport, args.port, args.size, run_id))
        confs[name] = path
    return confs


class _Stopper(object):
    """Whether to stop: a signal was caught, or the controller is gone (gone says why)."""

    def __init__(self, caught):
        self.caught = caught
        self.watch = control.StreamWatch([("stdout", sys.stdout), ("stderr", sys.stderr)])
        self.gone = None

    def __call__(self):
        if self.gone is None:
            broken = self.watch.broken()
            if broken:
                self.gone = "%s lost its reader" % broken
        return bool(self.caught) or self.gone is not None


class _Run(object):
    """The phases of one run, one trafgen process each, with the progress lines
    (from the NIC's tx_packets) and the per-second samples of the measured run."""

    def __init__(self, args, confs, poll_stop):
        self.args, self.confs, self.poll_stop = args, confs, poll_stop
        self.iface = args.iface
        self.results = {}
        self.failure = None
        self.run_start = None
        self.last_t, self.last_tx = None, _nic_tx(self.iface)
        self.total_sent_nic = 0
        self.window_start = WindowStart(self.iface, None)  # read between the warm-up and the window

    def all(self, phases):
        for name, run_id, scheduled, duration in phases:
            if self.poll_stop():
                break
            if name == "measured" and "warmup" in self.results:
                # the measured run starts on the warm-up's schedule, not before its end
                w = self.results["warmup"]
                while time.perf_counter() < w["ready_pc"] + w["duration"] and not self.poll_stop():
                    time.sleep(0.0005)
                if not self.poll_stop():
                    self.window_start.at = w["ready_pc"] + w["duration"]
                    self.window_start.poll(time.perf_counter())
            self.phase(name, scheduled, duration)
            if self.failure:
                break

    def phase(self, name, scheduled, duration):
        args, iface = self.args, self.iface
        tx0 = _nic_tx(iface)
        ph = TrafgenPhase(trafgen_argv(args.trafgen, iface, self.confs[name], scheduled, args.pps))
        self.failure = ph.start(self.poll_stop)
        if self.failure:
            ph.finish()
            self.results[name] = {"phase": ph, "ready_pc": None, "duration": duration, "tx0": tx0,
                                  "tx1": _nic_tx(iface), "samples": []}
            return
        if self.run_start is None:
            self.run_start = self.last_t = ph.ready_pc
        whole = int(duration + 1e-9) if name == "measured" else 0
        samples = self._watch(ph, tx0, duration + (END_GRACE_S if name == "measured" else 0.0), whole)
        ph.stop()  # a no-op when trafgen finished by itself
        if not ph.stopped and ph.proc.returncode != 0:
            self.failure = "trafgen exited with %s while sending: %s" % (
                ph.proc.returncode, ph.err.decode("utf-8", "replace").strip()[-300:])
        tx1 = _nic_tx(iface)
        while len(samples) < whole:
            samples.append(tx1)  # trafgen ended before these seconds: nothing more was sent
        if tx0 is not None and tx1 is not None:
            self.total_sent_nic += tx1 - tx0
        self.results[name] = {"phase": ph, "ready_pc": ph.ready_pc, "duration": duration, "tx0": tx0,
                              "tx1": tx1, "samples": samples}

    def _watch(self, ph, tx0, span, whole):
        """While trafgen runs, until its deadline: the NIC's tx_packets before each of the
        first `whole` seconds' bursts, and the progress lines."""
        args, iface, ready = self.args, self.iface, ph.ready_pc
        deadline = ready + span
        samples = []
        next_sample = 1
        next_report = (self.last_t + args.progress_s) if args.progress_s > 0 else float("inf")
        while not ph.done():
            now = time.perf_counter()
            if self.poll_stop() or now >= deadline:
                break
            if next_sample <= whole and now >= ready + next_sample - TRAFGEN_SAMPLE_LEAD_S:
                samples.append(_nic_tx(iface))
                next_sample += 1
            if now >= next_report:
                self._progress(now, tx0)
                next_report += args.progress_s
                while next_report <= now:
                    next_report += args.progress_s
            nxt = min(deadline, next_report,
                      ready + next_sample - TRAFGEN_SAMPLE_LEAD_S if next_sample <= whole else deadline)
            time.sleep(min(max(nxt - time.perf_counter(), 0.0), control.WATCH_S))
        return samples

    def _progress(self, now, tx0):
        tx = _nic_tx(self.iface)
        if tx is not None and self.last_tx is not None:
            line = "progress t=%.1fs sent=%d pps=%.0f\n" % (
                now - self.run_start, self.total_sent_nic + tx - tx0,
                (tx - self.last_tx) / max(now - self.last_t, 1e-9))
            if not control.write(sys.stderr, line):
                self.poll_stop.gone = "writing a progress line to stderr failed"
        self.last_t, self.last_tx = now, tx

    def figures(self, name, scheduled):
        """One phase's figures: trafgen's count (the NIC's, if it was killed before
        printing it), its times and its report."""
        r = self.results.get(name)
        if r is None:
            return {"sent": 0, "not_offered": scheduled, "nic_tx_packets": None, "ready_pc": None, "end_pc": None,
                    "trafgen": None}
        rep = r["phase"].report()
        sent = rep["stats"]["packets"]
        nic = r["tx1"] - r["tx0"] if r["tx0"] is not None and r["tx1"] is not None else None
        if sent is None:
            sent = nic if nic is not None else 0  # killed before its summary: the NIC's count
        return {"sent": sent, "not_offered": scheduled - sent, "nic_tx_packets": nic, "ready_pc": r["ready_pc"],
                "end_pc": r["phase"].end_pc, "trafgen": rep, "samples": r["samples"], "tx0": r["tx0"],
                "tx1": r["tx1"]}


def run_trafgen(args):
    """--backend trafgen: the run described by cli.parse_args(); (result dict, exit status)."""
    iface = args.iface
    src_mac, src_ip, keep, version = _prepare(args)
    sport = keep.getsockname()[1]
    phases = _phases(args)
    confs = _write_configs(args, phases, src_mac, src_ip, sport)
    stop, caught = control.stop_on_signals()
    poll_stop = _Stopper(caught)
    clock = report.Clock()
    before = read_counters(iface)
    run = _Run(args, confs, poll_stop)
    try:
        run.all(phases)
    finally:
        for path in confs.values():
            try:
                os.unlink(path)
            except OSError:
                pass
    t_drain = time.perf_counter()
    after = wait_drained(iface)
    drained_s = time.perf_counter() - t_drain
    keep.close()
    interrupted = bool(caught) or poll_stop.gone is not None or run.failure is not None
    result = _result(args, clock, run, interrupted,
                     counters_report(iface, before, after, drained_s, args.warmup_s > 0, run.window_start.snap,
                                     run.window_start.late_s),
                     {"path": args.trafgen, "version": version, "sport": sport})
    if run.failure is not None and not caught and poll_stop.gone is None:
        control.say_error(run.failure)
    return result, control.exit_status(caught, poll_stop.gone, run.failure is not None)


def _warmup(args, clock, run, m):
    """The warm-up's figures (None without --warmup-s)."""
    if args.warmup_s <= 0:
        return None
    w = run.figures("warmup", args.warmup_scheduled)
    return {"run_id": args.warmup_run_id, "duration_s": float(args.warmup_s),
            "scheduled": args.warmup_scheduled, "sent": w["sent"], "send_errors": 0, "send_error_kinds": {},
            "not_offered": w["not_offered"], "failed_seqs": [], "nic_tx_packets": w["nic_tx_packets"],
            "start_monotonic_ns": clock.mono_at(w["ready_pc"]) if w["ready_pc"] else None,
            "end_monotonic_ns": clock.mono_at(w["end_pc"]) if w["end_pc"] else None,
            # from the warm-up's planned end (its start + warmup_s) to the measured run's start
            "gap_to_measured_s": (round(m["ready_pc"] - (w["ready_pc"] + float(args.warmup_s)), 6)
                                  if w["ready_pc"] and m["ready_pc"] else None),
            "trafgen": w["trafgen"]}


METHODS = {
    "sent": "trafgen's own count ('packets outgoing' at its exit; the NIC's tx_packets delta "
            "if trafgen was killed before printing it)",
    "send_errors": "not reported by trafgen: 0 here; compare sent with nic_tx_packets",
    "window": "from trafgen's 'Running!' line (read at once; its first packet leaves ~2 ms "
              "before, measured) for duration_s; trafgen is stopped with SIGINT at its end plus "
              "%g s" % END_GRACE_S,
    "sent_per_s": "the NIC's tx_packets read before trafgen started and %g ms before each whole "
                  "second of the window (every packet on the interface counts)"
                  % (TRAFGEN_SAMPLE_LEAD_S * 1000),
}


def _result(args, clock, run, interrupted, source_counters, trafgen):
    m = run.figures("measured", args.scheduled)
    duration = float(args.duration)
    start = m["ready_pc"]
    if start is None:
        window = 0.0
        start = m["end_pc"] or time.perf_counter()
    elif interrupted:
        window = min(max(m["end_pc"] - start, 0.0), duration)
    else:
        window = duration
    end_pc = m["end_pc"] or start
    per_s = []
    if m.get("samples") is not None and m.get("tx0") is not None and None not in m["samples"]:
        marks = [m["tx0"]] + m["samples"]
        per_s = [b - a for a, b in zip(marks, marks[1:])]
    per_thread = [{"thread": 0, "scheduled": args.scheduled, "sent": m["sent"], "send_errors": 0,
                   "not_offered": m["not_offered"], "max_burst": None, "max_lag_us": None}]
    extra = {
        "send_ns": "0 in every packet: trafgen cannot write a send time; latency not available",
        "pacing": "trafgen --rate: each second's packets back to back at the start of that second "
                  "(mean rate exact, one burst per second)",
        "methods": METHODS,
        "nic_tx_packets": m["nic_tx_packets"],
        "trafgen": dict(trafgen, measured=m["trafgen"]),
    }
    return report.build(args, clock, "trafgen", start, end_pc, window, m["sent"], m["not_offered"], interrupted,
                        per_thread, per_s, _warmup(args, clock, run, m), source_counters, "trafgen", extra=extra)
