"""Check a tcpdump capture of a trial against what the generator says it sent.

The DUT agent captures the trial's traffic with ``tcpdump -w`` (classic pcap,
Ethernet, usually cut to a small snaplen); the generator reports how many
packets it scheduled and which sends failed.  ``verify_capture`` reads the
capture, picks out the UDP packets to the trial's port that carry the xdplab
payload header (``bpf/xdplab.h``: magic, seq, send_ns, run_id, network byte
order) and counts, per sequence number, what arrived: unique, duplicated,
missing, reordered, out of range.  This gives a loss figure from a second,
independent observer beside the XDP program's own counts.

Standard library only, pure logic (no subprocesses, no network), and fast
enough for captures of ~10^6 packets: the file is read in large chunks, the
common frame (untagged Ethernet, IPv4 without options, UDP) is decoded with a
single ``struct.unpack_from``, and seen sequence numbers are kept in a
bitmap, one bit per scheduled seq (15 million packets: 1.9 MB).
"""

import collections
import re
import struct

from .sourcehost.wire import HEADER_LEN as HDR_LEN, MAGIC  # the payload header, defined once

__all__ = ["verify_capture", "MAGIC", "HDR_LEN", "LINKTYPE_ETHERNET"]

LINKTYPE_ETHERNET = 1
MISSING_EXAMPLES = 20
# Read size: the file is streamed, so memory is this (about three times, while a chunk
# is joined to the rest of the previous one) plus one byte per scheduled packet, never
# the capture's size.  1 MiB costs ~5 % of the speed of 16 MiB and a tenth of the memory.
CHUNK_BYTES = 1 << 20
MAX_RECORD_BYTES = 1 << 20  # larger than any snaplen tcpdump uses: the file is corrupt

_PCAP_MAGICS = {0xA1B2C3D4: "us", 0xA1B23C4D: "ns"}
_ETH_VLAN = (0x8100, 0x88A8, 0x9100)
_ETH_IPV4 = 0x0800

# Untagged Ethernet + IPv4 without options + UDP + payload header, read from
# frame offset 12 (the EtherType) to 60: ethertype, version/ihl, flags+fragment
# offset, protocol, UDP destination port, magic, seq, run_id.
_FAST = struct.Struct("!HBx2x2xHxB10xHH4xII8xH")
_FAST_END = 12 + _FAST.size  # 60
# The same fields, picked one header at a time for every other frame.
_ETHERTYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!B5xHxB")  # version/ihl, flags+fragment offset, protocol
_UDP_PORTS = struct.Struct("!HH")  # source, destination
_PAYLOAD = struct.Struct("!II8xH")  # magic, seq, run_id

METHOD = (
    "Read every record of the classic pcap capture, decoded Ethernet (skipping "
    "802.1Q/802.1ad tags), IPv4 (first fragments, header length from IHL) and UDP, "
    "matched UDP packets to the trial's port whose payload starts with the xdplab "
    "magic and this run_id, and counted each seq once in a per-seq table: a seq seen "
    "again is duplicated, one at or past 'scheduled' is out of range, a first arrival "
    "below the highest seq already seen in its stream (one sender's: its UDP source "
    "port, and seq % threads) is reordered, and a scheduled seq never seen whose send "
    "did not fail is missing."
)


def _global_header(head, path):
    if len(head) < 24:
        raise ValueError("%s: not a pcap file (only %d bytes)" % (path, len(head)))
    magic_le = struct.unpack_from("<I", head, 0)[0]
    magic_be = struct.unpack_from(">I", head, 0)[0]
    if magic_le in _PCAP_MAGICS:
        endian, resolution = "<", _PCAP_MAGICS[magic_le]
    elif magic_be in _PCAP_MAGICS:
        endian, resolution = ">", _PCAP_MAGICS[magic_be]
    elif magic_le == 0x0A0D0D0A:
        raise ValueError("%s: pcapng is not supported; capture with tcpdump -w (classic pcap)" % path)
    else:
        raise ValueError("%s: not a pcap file (magic 0x%08x)" % (path, magic_be))
    snaplen, linktype = struct.unpack_from(endian + "II", head, 16)
    if linktype & 0xFFFF != LINKTYPE_ETHERNET:
        raise ValueError("%s: link type %d is not supported (Ethernet, 1, only)"
                         % (path, linktype & 0xFFFF))
    return endian, resolution, snaplen


def _slow_parse(buf, base, n, port):
    """(magic, seq, run_id, source port) of a UDP packet to port whose n captured bytes start at
    buf[base], else None."""
    if n < 14:
        return None
    end = base + n
    off = base + 12
    ethertype = _ETHERTYPE.unpack_from(buf, off)[0]
    while ethertype in _ETH_VLAN:
        off += 4
        if end < off + 2:
            return None
        ethertype = _ETHERTYPE.unpack_from(buf, off)[0]
    off += 2
    if ethertype != _ETH_IPV4 or end < off + 20:
        return None
    vihl, frag, proto = _IPV4.unpack_from(buf, off)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or proto != 17 or frag & 0x1FFF:
        return None
    off += ihl
    if end < off + 8 + HDR_LEN:
        return None
    sport, dport = _UDP_PORTS.unpack_from(buf, off)
    if dport != port:
        return None
    return _PAYLOAD.unpack_from(buf, off + 8) + (sport,)


def verify_capture(pcap_path, *, run_id, port, scheduled, threads, failed_seqs=(), send_errors=0):
    """Count the trial's packets in a pcap file against the generator's schedule.

    pcap_path: classic pcap (either byte order, us or ns timestamps), Ethernet.
    run_id, port: the trial's; scheduled, threads: from the generator's JSON
    (its seqs are 0..scheduled-1, a stream is one sender's packets, by UDP source port, of one seq % threads).
    failed_seqs, send_errors: the generator's failed sends; listed failed seqs
    are not counted as missing, and ``send_errors_unlisted`` says how many
    failed sends were not listed (so up to that many 'missing' were never sent).

    Returns a dict: packets_in_file, matched, other_run, not_ours, unique,
    duplicated, missing, missing_examples, reordered, out_of_range,
    send_errors_unlisted, file_truncated, method.  Raises ValueError for a file
    that is not a classic Ethernet pcap.
    """
    scheduled = int(scheduled)
    threads = int(threads)
    if scheduled < 0 or threads < 1:
        raise ValueError("scheduled must be >= 0 and threads >= 1")
    counted, seen = _count_records(pcap_path, run_id, port, scheduled, threads)
    missing, examples = _missing(seen, scheduled, counted["unique"], failed_seqs)
    return {
        "packets_in_file": counted["packets"],
        "matched": counted["matched"],
        "other_run": counted["other_run"],
        "not_ours": counted["not_ours"],
        "unique": counted["unique"],
        "duplicated": counted["duplicated"],
        "missing": missing,
        "missing_examples": examples,
        "reordered": counted["reordered"],
        "out_of_range": counted["out_of_range"],
        "send_errors_unlisted": max(0, int(send_errors) - len(set(failed_seqs))),
        "file_truncated": counted["file_truncated"],
        "method": METHOD,
    }


def _count_records(pcap_path, run_id, port, scheduled, threads):
    """({packets, matched, other_run, not_ours, unique, duplicated, reordered,
    out_of_range, file_truncated}, the bitmap of seqs seen: bit seq & 7 of byte seq >> 3).

    The per-record loop is one block on purpose: every lookup it can do once is a local,
    and the common frame is one struct.unpack_from (bench_generator.py part 4 times it)."""
    seen = bytearray((scheduled + 7) // 8)
    high = collections.defaultdict(int)  # a stream's highest seq so far (0 before any: seqs are >= 0)
    packets = matched = other_run = not_ours = unique = 0
    duplicated = reordered = out_of_range = 0
    fast, slow = _FAST.unpack_from, _slow_parse
    with open(pcap_path, "rb") as f:
        endian, _resolution, _snaplen = _global_header(f.read(24), pcap_path)
        rec_unpack = struct.Struct(endian + "8xII").unpack_from  # incl_len, orig_len
        data, data_off, pos = b"", 24, 0  # data_off: the file offset of data[0]
        while True:
            end = len(data)
            # Every complete record in this chunk.
            while end - pos >= 16:
                incl = rec_unpack(data, pos)[0]
                if incl > MAX_RECORD_BYTES:
                    raise ValueError("%s: record at byte %d claims %d bytes: corrupt file"
                                     % (pcap_path, data_off + pos, incl))
                start = pos + 16
                if end - start < incl:
                    break
                pos = start + incl
                packets += 1
                if incl >= _FAST_END:
                    et, vihl, frag, proto, sport, dport, magic, seq, rid = fast(data, start + 12)
                    if et != _ETH_IPV4 or vihl != 0x45:
                        got = slow(data, start, incl, port)
                        if got is None:
                            not_ours += 1
                            continue
                        magic, seq, rid, sport = got
                    elif proto != 17 or frag & 0x1FFF or dport != port:
                        not_ours += 1
                        continue
                else:
                    got = slow(data, start, incl, port)
                    if got is None:
                        not_ours += 1
                        continue
                    magic, seq, rid, sport = got
                if magic != MAGIC:
                    not_ours += 1
                    continue
                if rid != run_id:
                    other_run += 1
                    continue
                matched += 1
                if seq >= scheduled:
                    out_of_range += 1
                    continue
                bit = 1 << (seq & 7)
                if seen[seq >> 3] & bit:
                    duplicated += 1
                    continue
                seen[seq >> 3] |= bit
                unique += 1
                # A stream: one sender's (its source port's) packets of one seq % threads:
                # in order as sent, also when senders take over each other's packets.
                t = sport * threads + seq % threads
                if seq < high[t]:
                    reordered += 1
                else:
                    high[t] = seq
            more = f.read(CHUNK_BYTES)
            if not more:
                break
            data_off += pos
            data = data[pos:] + more
            pos = 0
    # file_truncated: e.g. tcpdump killed in the middle of a record
    return dict(packets=packets, matched=matched, other_run=other_run, not_ours=not_ours, unique=unique,
                duplicated=duplicated, reordered=reordered, out_of_range=out_of_range,
                file_truncated=pos < end), seen


def _missing(seen, scheduled, unique, failed_seqs):
    """(seqs never seen whose send did not fail, the first MISSING_EXAMPLES of them)."""
    def was_seen(s):
        return seen[s >> 3] & (1 << (s & 7))

    failed = set(s for s in failed_seqs if 0 <= s < scheduled and not was_seen(s))
    missing = scheduled - unique - len(failed)
    examples = []
    for m in re.finditer(rb"[^\xff]", seen):   # bytes with a seq never seen (or the last, partly used)
        byte = m.start()
        for s in range(byte * 8, min(byte * 8 + 8, scheduled)):
            if not was_seen(s) and s not in failed and len(examples) < MISSING_EXAMPLES:
                examples.append(s)
        if len(examples) >= MISSING_EXAMPLES:
            break
    return missing, examples
