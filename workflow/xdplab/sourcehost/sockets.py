"""The senders' sockets: a connected UDP socket, or an AF_PACKET socket that
bypasses the qdisc; libc's sendmmsg through ctypes (Linux), and the source
address, MAC and MTU of a test interface.
"""

import ctypes
import socket
import struct
import sys

from . import control
from .counters import read_text
from .wire import IP_HLEN, UDP_HLEN, mac_bytes

SNDBUF_BYTES = 4 << 20
# Linux constants the socket module may lack
SOL_PACKET = 263
PACKET_QDISC_BYPASS = 20
SIOCGIFADDR = 0x8915


class Mmsghdr(ctypes.Structure):
    pass


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


Mmsghdr._fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


def load_libc():
    if not sys.platform.startswith("linux"):
        return None
    # The interpreter's own symbols include libc's; find_library would run ldconfig.
    for name in (None, "libc.so.6"):
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            pass
    return None


def sendmmsg(libc):
    """libc's sendmmsg with argument types set, or None (macOS, old libc)."""
    fn = getattr(libc, "sendmmsg", None) if libc is not None else None
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def sockaddr_in(ip, port):
    """struct sockaddr_in as Linux lays it out (sin_family u16 in host order)."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + bytes(8)


def iface_ipv4(iface):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        import fcntl
        res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", iface.encode()[:15]))
        return socket.inet_ntoa(res[20:24])
    finally:
        s.close()


def open_udp(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
    except OSError:
        pass  # the default buffer works, only with less room for bursts
    if src is not None:
        s.bind((src, 0))
    return s


def open_packet(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: sends only, receives nothing
    try:
        s.bind((iface, 0))
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
        except OSError:
            pass
    except OSError:
        s.close()
        raise
    return s


def packet_source(iface, src, size, what, fit_note=""):
    """(src_mac, src_ip) for hand-built frames out of iface, checked before anything
    is sent: the interface exists, the payload fits its MTU, it has an IPv4 address
    (unless src is given).  Exits with status 2 naming what is wrong."""
    mtu = read_text("/sys/class/net/%s/mtu" % iface)
    mac = read_text("/sys/class/net/%s/address" % iface)
    if mtu is None or mac is None:
        control.die("--iface %s: no such interface" % iface)
    if size + IP_HLEN + UDP_HLEN > int(mtu):
        control.die("--size %d does not fit --iface %s's MTU of %d bytes%s (at most %d)"
                    % (size, iface, int(mtu), fit_note, int(mtu) - IP_HLEN - UDP_HLEN))
    if src is None:
        try:
            src = iface_ipv4(iface)
        except OSError:
            control.die("%s: --iface %s has no IPv4 address; give --src" % (what, iface))
    return mac_bytes(mac.strip()), src
