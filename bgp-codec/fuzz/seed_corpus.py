"""Write seed inputs for the bgp_decode fuzz target: one of each message kind the speaker sends or receives, built
here byte by byte from RFC 4271/4760/6793/1997/8092 (independently of the Rust encoder).

usage: seed_corpus.py DIR
"""
import os
import struct
import sys


def msg(kind, body):
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), kind) + body


def attr(flags, code, value):
    return bytes([flags, code, len(value)]) + value


caps = b"".join([
    bytes([1, 4]) + struct.pack("!HBB", 1, 0, 1),            # multiprotocol IPv4 unicast
    bytes([1, 4]) + struct.pack("!HBB", 2, 0, 1),            # multiprotocol IPv6 unicast
    bytes([2, 0]),                                           # route refresh
    bytes([64, 6]) + struct.pack("!HHBB", 0x8078, 1, 1, 0x80),  # graceful restart, R bit, 120 s, IPv4 fwd
    bytes([65, 4]) + struct.pack("!I", 4200000001),          # four-octet AS
])
open_body = struct.pack("!BHH4s", 4, 23456, 90, bytes([198, 18, 255, 1])) + bytes([len(caps) + 2, 2, len(caps)]) + caps
attrs = (attr(0x40, 1, b"\x00") + attr(0x40, 2, b"\x02\x01" + struct.pack("!I", 65001))
         + attr(0x40, 3, bytes([198, 18, 255, 1])) + attr(0x80, 4, struct.pack("!I", 50))
         + attr(0xC0, 8, struct.pack("!I", 0xFFFF0000)) + attr(0xC0, 32, struct.pack("!III", 65001, 1, 1)))
update4 = struct.pack("!H", 0) + struct.pack("!H", len(attrs)) + attrs + bytes([32, 198, 19, 0, 1])
mp = struct.pack("!HB", 2, 1) + bytes([16]) + bytes.fromhex("20010db800ff00000000000000000001") + b"\x00" \
     + bytes([128]) + bytes.fromhex("20010db8010000000000000000000001")
update6 = struct.pack("!H", 0) + struct.pack("!H", 3 + len(mp)) + bytes([0x80, 14, len(mp)]) + mp
withdraw6 = struct.pack("!H", 0) + struct.pack("!H", 3 + 3 + 17) + bytes([0x80, 15, 20]) + struct.pack("!HB", 2, 1) \
            + bytes([128]) + bytes.fromhex("20010db8010000000000000000000001")
seeds = {
    "keepalive": msg(4, b""),
    "open": msg(1, open_body),
    "update_v4": msg(2, update4),
    "update_v6": msg(2, update6),
    "withdraw_v6": msg(2, withdraw6),
    "end_of_rib": msg(2, b"\x00\x00\x00\x00"),
    "notification": msg(3, bytes([6, 2]) + b"bye"),
    "route_refresh": msg(5, struct.pack("!HBB", 1, 0, 1)),
    "stream": msg(1, open_body) + msg(4, b"") + msg(2, update4) + msg(4, b""),
}
os.makedirs(sys.argv[1], exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(data)
