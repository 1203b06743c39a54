"""Frame sizes and bit rates: the bytes of a trial's packet on an Ethernet link, defined once.

xdplab's `packet_size` is the UDP payload in bytes; RFC 2544, TRex and FD.io CSIT speak
of the Ethernet frame instead (`frame_size`: Ethernet header 14 + IPv4 header 20 + UDP
header 8 + payload + FCS 4, so frame = payload + 46).  xdplab's payload holds at least
its 18-byte header (sourcehost/wire.py), so every frame it sends is at least the
Ethernet minimum of 64 bytes and no frame is ever padded: the conversion is exact both
ways.  Bit rates: L2 counts the frame (header to FCS), L1 also the preamble and start of
frame delimiter (8) and the inter-frame gap (12) that a frame takes of the line's time
(RFC 2544 and CSIT's "L1" and "L2" rates; summary.csv's `throughput_wire_mbps` is L1).

Pure functions, standard library only (the archive's ./reaggregate imports it).
"""

from __future__ import annotations

from .sourcehost.wire import ETH_HLEN, HEADER_LEN, IP_HLEN, UDP_HLEN

FCS_BYTES = 4
IPV4_UDP_BYTES = IP_HLEN + UDP_HLEN            # 28: an IP packet is the payload + this
ETHERNET_BYTES = ETH_HLEN + FCS_BYTES          # 18: a frame is the IP packet + this
FRAME_OVERHEAD_BYTES = IPV4_UDP_BYTES + ETHERNET_BYTES  # 46: frame = payload + this
MIN_FRAME_BYTES = 64                           # Ethernet's minimum frame (FCS included)
L1_OVERHEAD_BYTES = 8 + 12                     # preamble + SFD, inter-frame gap
MIN_PAYLOAD_BYTES = HEADER_LEN                 # 18: xdplab's payload header
MIN_XDPLAB_FRAME_BYTES = MIN_PAYLOAD_BYTES + FRAME_OVERHEAD_BYTES  # 64


def frame_bytes(payload: int) -> int:
    """The Ethernet frame (header and FCS included, padded to 64) of a UDP payload."""
    return max(payload + FRAME_OVERHEAD_BYTES, MIN_FRAME_BYTES)


def payload_bytes(frame: int) -> int:
    """The UDP payload of an Ethernet frame of `frame` bytes (FCS included)."""
    return frame - FRAME_OVERHEAD_BYTES


def wire_bytes(payload: int) -> int:
    """Line time of one frame in bytes: the frame, preamble and SFD, inter-frame gap."""
    return frame_bytes(payload) + L1_OVERHEAD_BYTES


def l2_bits_per_s(pps: float, payload: int) -> float:
    """The frames' bit rate (Ethernet header to FCS), bits per second."""
    return pps * frame_bytes(payload) * 8


def l1_bits_per_s(pps: float, payload: int) -> float:
    """The line time a rate takes (frame, preamble, inter-frame gap), bits per second."""
    return pps * wire_bytes(payload) * 8


def mbps(pps, payload: int, layer: int, digits: int = 3):
    """L1 or L2 bit rate of `pps` packets/s of `payload`-byte payloads, Mbit/s (10^6 bits),
    rounded; None when pps is None."""
    if pps is None or pps != pps:
        return None
    bits = l1_bits_per_s(pps, payload) if layer == 1 else l2_bits_per_s(pps, payload)
    return round(bits / 1e6, digits)
