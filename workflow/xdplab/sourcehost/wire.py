"""The xdplab payload header and the frames that carry it: defined here once.

Every UDP payload of a trial starts with this 18-byte header (magic, seq,
send_ns, run_id; network byte order), mirroring ``struct xdplab_payload_hdr``
and XDPLAB_MAGIC in ``bpf/xdplab.h``.  The generator writes it, and the DUT
agent's capture filter and the capture checker (``pcapcheck``) read it, all
from these definitions.  Standard library only (it runs on the source host and
inside the DUT agent's archive).
"""

import socket
import struct

MAGIC = 0x58444C42  # "XDLB", XDPLAB_MAGIC in bpf/xdplab.h
HEADER = struct.Struct("!IIQH")  # magic, seq, send_ns, run_id: XDPLAB_HDR_LEN bytes
HEADER_LEN = HEADER.size
MAX_PAYLOAD = 65507  # largest UDP payload over IPv4
ETH_HLEN = 14
IP_HLEN = 20
UDP_HLEN = 8


def ipv4_checksum(header):
    """RFC 1071 one's-complement sum over a header whose checksum field is zero."""
    if len(header) % 2:
        header += b"\0"
    total = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport, payload_len):
    """Ethernet + IPv4 + UDP headers for a payload of payload_len bytes, followed
    by that many zero bytes.  DF set, so a constant IP ID is allowed (RFC 6864);
    UDP checksum 0 (none), which IPv4 allows."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, IP_HLEN + UDP_HLEN + payload_len, 0, 0x4000,
                               64, socket.IPPROTO_UDP, 0, socket.inet_aton(src_ip),
                               socket.inet_aton(dst_ip)))
    struct.pack_into("!H", ip, 10, ipv4_checksum(bytes(ip)))
    udp = struct.pack("!HHHH", sport, dport, UDP_HLEN + payload_len, 0)
    return dst_mac + src_mac + b"\x08\x00" + bytes(ip) + udp + bytes(payload_len)


def mac_bytes(text):
    """b'\\xaa...' from 'aa:bb:cc:dd:ee:ff'; ValueError if it is not a MAC address."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(x) in (1, 2) for x in parts):
        raise ValueError("%r is not a MAC address (aa:bb:cc:dd:ee:ff)" % text)
    return bytes(int(x, 16) for x in parts)


def mac_text(raw):
    return ":".join("%02x" % b for b in raw)
