"""xdplab source host: the traffic generator, the pre-flight check and the host facts.

Runs on the source host of a trial.  Built into one file, dist/xdplab-source.pyz
(`make source`), uploaded over the SSH command channel (no SFTP needed) and run
with whatever ``python3`` (>= 3.8) is there, on Linux or macOS, so it imports
nothing but the Python standard library.  The contract it implements is in
``workflow/xdplab/PROTOCOL.md`` ("Payload header", "Generator command line and
output"); the header layout mirrors ``bpf/xdplab.h``.

Usage::

    python3 xdplab-source.pyz send --dst 10.201.0.2 --port 12345 --pps 10000 --size 1458 \\
        --duration 5 --threads 2 --run-id 4242 [--src 10.201.0.1] [--progress-s 1] \\
        [--pattern constant|burst|poisson] [--burst-size N] [--seed N] \\
        [--send-path udp|packet|auto] [--iface IF] [--dst-mac MAC] [--counters-iface IF] \\
        [--warmup-s S --warmup-run-id W]
    python3 xdplab-source.pyz preflight IFACE DUT_ADDRESS REMOTE_PREFIX ADDRESS
    python3 xdplab-source.pyz facts '["IFACE", ...]'

Modules, one concern each (``send`` imports only what it runs):
    __main__   the three commands
    cli        the generator's command line, checked (send)
    wire       the payload header, MAGIC, frame building (also used by the DUT agent
               and the capture checker)
    control    signals, a controller that is gone, exit statuses
    counters   the source's counters around a run
    sockets    UDP and AF_PACKET sockets, sendmmsg through ctypes
    stream     one sender's paced stream: the measured hot loop
    sender     the Python backend: sender processes, start, watch, add up
    trafgen    the trafgen backend
    report     the JSON report, one builder for both backends
    preflight  the source check before a run (``preflight``)
    facts      what the host is, for the archive (``facts``)

Every UDP payload is ``--size`` bytes: an 18-byte header (magic, seq, send_ns,
run_id; network byte order) followed by zero bytes.  ``--threads T`` starts T
sender processes (fork: CPython's GIL let threads overlap little more than
their system calls).  Sender ``t`` sends ``seq = k*T + t`` for its ``k``-th
packet, so the run's sequence numbers are ``0 .. scheduled-1`` with
``scheduled = ceil(pps * duration)``.

Pacing.  Every packet has an absolute due time on ``time.perf_counter()``
(CLOCK_MONOTONIC on Linux, shared by the processes):

- constant: packet ``i`` at ``start + i/pps``;
- burst: packets in bursts of ``--burst-size`` B, burst ``j`` at
  ``start + j*B/pps`` (the mean rate stays ``pps``);
- poisson: a Poisson process conditioned on exactly ``scheduled`` packets in
  the window: each sender draws its packets' times as the order statistics of
  uniform times in ``[0, duration)``, one after the other from ``--seed``
  (gaps are then exponential for all practical purposes, and the mean rate is
  the target's exactly; the seed is recorded).

A sender sends, in one ``sendmmsg`` call (ctypes, Linux; a ``sendto`` loop
elsewhere), every packet of its stream that is due, up to BATCH_MAX; at low
rates that is one packet per deadline.  Between deadlines it sleeps, and spins
on ``perf_counter`` for the last SPIN_S before a deadline, because a sleep
ends tens of microseconds late.  Each packet's header (seq, send_ns) is
written just before its batch goes out.  A sender that fell behind catches
up in batches: ``max_burst`` reports the longest run of packets it sent
without once being ahead of schedule.  The trial is not stretched: nothing
is sent after ``start + duration`` (plus END_GRACE_S, 10 ms, for a packet due
before the end whose sender was descheduled); what was due but not sent by
then is ``not_offered``,
and ``achieved_pps = sent / window_s`` with ``window_s = duration`` (or less
when interrupted).  ``rate_sustained`` is false when ``achieved_pps`` is more
than 0.1 % below ``target_pps``.

Warm-up.  With ``--warmup-s S --warmup-run-id W`` every sender first sends
the warm-up, ``ceil(pps * S)`` packets with run id W (seqs from 0, the same
rate, pattern and stream split), in ``[start, start + S)``, then the measured
run (run id ``--run-id``, seqs from 0) in ``[start + S, start + S + duration)``:
one absolute schedule, no gap but the pattern's own.  A warm-up packet not
sent by ``start + S`` is not sent (no grace: the measured window begins on
time).  The report's fields are the measured run's; ``"warmup"`` holds the
warm-up's (run_id, duration_s, scheduled, sent, send_errors,
send_error_kinds, not_offered, failed_seqs (at most 1000), start/end
monotonic ns), null without a warm-up.  ``source_counters`` are read at
the measured window's start too: ``warmup_delta`` and ``window_delta`` are
each phase's own, ``delta`` spans both.

``sent_per_s``: packets sent in each whole second of the measured window,
from its start, summed over senders (a batch counts in the second in which it
went out).  The last partial second, and packets sent in the END_GRACE_S
after the window, are dropped, so ``sum(sent_per_s) <= sent``.

Send paths: ``udp`` (default) uses one connected UDP socket per sender.
``packet`` uses an AF_PACKET socket with PACKET_QDISC_BYPASS per sender and
sends whole hand-built Ethernet/IPv4/UDP frames (IPv4 checksum computed, UDP
checksum 0) to ``--dst-mac`` out of ``--iface``: no UDP/IP stack, no qdisc,
no neighbour lookup.  It needs Linux and root (CAP_NET_RAW).

Backend trafgen (``--backend trafgen``, Linux, root): netsniff-ng's trafgen
sends instead, the same header (send_ns left 0: trafgen cannot write it), seqs
0.. counted by trafgen itself; constant pattern, one sender; see "trafgen
backend" below for how, and for what each figure measures.

Source counters (``source_counters`` in the JSON): read before the first
packet, at the measured window's start when a warm-up precedes it, and again
once the traffic drained, from /proc/net/snmp,
/proc/net/stat/arp_cache, /sys/class/net/IF/statistics/tx_* and
``tc -s -j qdisc show dev IF``; null where unavailable.

Progress goes to stderr every ``--progress-s`` seconds (at most 1; 0 turns
it off): ``progress t=3.0s sent=30000 pps=10000``, where ``pps`` is the rate
over the last interval, summed over senders.  At the end one JSON object goes
to stdout.  SIGTERM, SIGINT and SIGHUP stop the sending within a batch (or
0.1 s of sleep); the JSON is still printed, with ``"interrupted": true``.

The generator must not outlive its controller.  Over SSH without a terminal
a broken session sends no SIGHUP: the only sign is that the pipes to sshd
lose their reader.  So a failed write of a progress line (EPIPE, EIO, a
closed stream), or stdout/stderr reporting an error or hang-up when polled
(every 50 ms, which also covers ``--progress-s 0``), means "the controller is
gone": sending stops at once.  Sender processes point their stdio at
/dev/null (they never hold the controller's pipes open), get SIGTERM when
the main process dies (Linux), and stop when their parent changes.

Exit status: 0 the sending window ran to its end (``not_offered`` says what
did not fit in it); 128 + N stopped by signal N; 1 a sender crashed (after
the JSON); 2 bad arguments (one line on stderr naming the argument), an
unbindable ``--src``, or a packet socket that cannot be opened; 3 the
controller is gone (stdout or stderr broken; the JSON is still attempted).

The UDP sockets are connected (no route lookup per packet, ~13 % faster
here).  Once the destination answers with ICMP port-unreachable the kernel
fails the next send with ECONNREFUSED and that packet is not sent; reading the
error clears it, so the generator sends that packet again, once.  Every packet
is offered, listener or not.
"""
