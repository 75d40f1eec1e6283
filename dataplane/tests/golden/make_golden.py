#!/usr/bin/env python3
"""Golden packets for the edgelb pipeline, built with scapy: an implementation independent of the code under test.

Writes, next to this script:
  config.json    the appliance topology and the service configs the Rust test builds ("A", then "B" mid-run)
  input.pcap     one input frame per step
  expected.pcap  the expected output frame of every step that transmits
  cases.json     the steps, in order: name, config, ingress port, verdict, index of the expected frame

Every expected frame is built from scratch with scapy (checksums computed by scapy), never by transforming the
input with edgelb code. Where the appliance derives entropy from its documented stable flow hash (tunnel outer
source, IPv6 flow label, GUE source port), this script re-implements that hash from its specification
(dataplane/src/lb/hash.rs, dataplane/src/lb/flow.rs): two implementations that must agree.

Run: python3 make_golden.py [OUT_DIR]   (needs scapy; output is deterministic; OUT_DIR defaults to this directory,
CI writes elsewhere and compares byte for byte with the committed fixtures)
"""
import ipaddress
import json
import os

from scapy.all import (ARP, ICMP, IP, IPv6, TCP, UDP, Dot1Q, Ether, ICMPv6EchoRequest, ICMPv6EchoReply,
                       ICMPv6ND_NS, ICMPv6PacketTooBig, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                       Raw, fragment, fragment6, wrpcap)
from scapy.utils import checksum as inet_checksum

import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else HERE

# ---- topology -------------------------------------------------------------------------------------------------
P0_MAC, P1_MAC = "02:00:00:00:01:00", "02:00:00:00:01:01"
GW_MAC = "02:00:00:00:00:fe"
GW4, GW6 = "198.18.1.254", "2001:db8:1::fe"
C4, C6 = "198.18.0.10", "2001:db8::10"
ROUTER4, ROUTER6 = "198.18.0.254", "2001:db8::fe"
SNAT4, SNAT6 = "198.18.2.1", "2001:db8:2::1"
TUN4, TUN6 = ("198.18.3.0", 24), ("2001:db8:3::", 120)
SNAT_LO, SNAT_HI = 20000, 29999


def bmac4(ip):
    return "02:00:00:00:02:%02x" % int(ip.split(".")[-1])


def bmac6(ip):
    return "02:00:00:00:06:%02x" % (int(ipaddress.IPv6Address(ip)) & 0xFF)


B4 = {n: "198.18.2.%d" % n for n in range(10, 20)}
B6 = {n: "2001:db8:2::%d" % n for n in range(10, 15)}


def svc(vip, proto, port, mode, backends, **kw):
    d = {"vip": vip, "protocol": proto, "port": port, "mode": mode, "backends": backends}
    d.update(kw)
    return d


def be(addr, port=0, state="active", weight=1):
    return {"addr": addr, "port": port, "weight": weight, "state": state}


def services(phase):
    drain18 = "draining" if phase == "B" else "active"
    s = [
        svc("198.19.0.1", "tcp", 80, "nat", [be(B4[10], 8080)]),
        svc("198.19.0.2", "tcp", 80, "fullnat", [be(B4[11], 80)]),
        svc("198.19.0.3", "tcp", 80, "dsr_l2", [be(B4[12])]),
        svc("198.19.0.4", "tcp", 80, "ipip", [be(B4[13])]),
        svc("198.19.0.5", "udp", 53, "gue", [be(B4[14])], gue_port=6080),
        svc("198.19.0.6", "udp", None, "nat", [be(B4[15])]),
        svc("198.19.0.7", "tcp", 443, "nat", [be(B4[16], 443), be(B4[17], 443, "draining")], affinity_timeout_s=10800),
        svc("198.19.0.8", "tcp", 80, "nat", [be(B4[18], 80, drain18)] + ([be(B4[19], 80)] if phase == "B" else [])),
        svc("2001:db8:100::1", "tcp", 80, "nat", [be(B6[10], 8080)]),
        svc("2001:db8:100::2", "tcp", 80, "fullnat", [be(B6[11], 80)]),
        svc("2001:db8:100::3", "tcp", 80, "dsr_l2", [be(B6[12])]),
        svc("2001:db8:100::4", "tcp", 80, "ipip", [be(B6[13])]),
        svc("2001:db8:100::5", "udp", 53, "gue", [be(B6[14])], gue_port=6080),
    ]
    return s


CONFIG = {
    "interfaces": [
        {"port": 0, "mac": P0_MAC, "addrs": ["198.18.1.1/24", "2001:db8:1::1/64"], "mtu": 1500},
        {"port": 1, "mac": P1_MAC, "addrs": ["198.18.2.1/24", "2001:db8:2::1/64"], "mtu": 1500},
    ],
    "gateways": [GW4, GW6],
    "neighbours": [[GW4, GW_MAC], [GW6, GW_MAC]]
    + [[a, bmac4(a)] for a in B4.values()]
    + [[a, bmac6(a)] for a in B6.values()],
    "fullnat_sources": [SNAT4, SNAT6],
    "fullnat_ports": [SNAT_LO, SNAT_HI],
    "tunnel_sources": [["%s/%d" % TUN4], ["%s/%d" % TUN6]],
    "configs": {"A": services("A"), "B": services("B")},
}
CONFIG["tunnel_sources"] = ["%s/%d" % TUN4, "%s/%d" % TUN6]

# ---- the documented stable flow hash (dataplane/src/lb/hash.rs, lb/flow.rs) --------------------------------------
M64 = (1 << 64) - 1
K0, K1 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9


def fmix64(k):
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & M64
    return k ^ (k >> 33)


def mix(h, w):
    x = h ^ ((w * K1) & M64)
    x = ((x << 27) | (x >> 37)) & M64
    return (x * K0) & M64


def flow_hash(src, dst, sport, dport, proto):
    ports = (sport << 32) | (dport << 16) | proto
    if ":" not in src:
        a = (int(ipaddress.IPv4Address(src)) << 32) | int(ipaddress.IPv4Address(dst))
        return fmix64(mix(mix(0x4C420004, a), ports))
    s, d = int(ipaddress.IPv6Address(src)), int(ipaddress.IPv6Address(dst))
    h = 0x4C420006
    for w in (s >> 64, s & M64, d >> 64, d & M64):
        h = mix(h, w)
    return fmix64(mix(h, ports))


def tunnel_src(v4, h):
    base, plen = TUN4 if v4 else TUN6
    bits = (32 if v4 else 128) - plen
    mask = (1 << bits) - 1
    return str(ipaddress.ip_address((int(ipaddress.ip_address(base)) & ~mask) | (h & 0xFFFFFFFF & mask)))


def gue_sport(h):
    return 0xC000 | ((h >> 20) & 0x3FFF)


# ---- steps ------------------------------------------------------------------------------------------------------
inputs, expected, cases = [], [], []


def step(name, frame, verdict, out=None, port=0, config="A"):
    cases.append({
        "name": name, "config": config, "in_port": port, "input": len(inputs), "verdict": verdict,
        "expected": (len(expected) if out is not None else None),
    })
    inputs.append(bytes(frame))
    if out is not None:
        expected.append(bytes(out))


def from_gw(pkt, vlan=None):
    e = Ether(src=GW_MAC, dst=P0_MAC)
    return e / Dot1Q(vlan=vlan) / pkt if vlan is not None else e / pkt


def to_gw(pkt, vlan=None):
    e = Ether(src=P0_MAC, dst=GW_MAC)
    return e / Dot1Q(vlan=vlan) / pkt if vlan is not None else e / pkt


def to_backend(mac, pkt, vlan=None):
    e = Ether(src=P1_MAC, dst=mac)
    return e / Dot1Q(vlan=vlan) / pkt if vlan is not None else e / pkt


def from_backend(mac, pkt):
    return Ether(src=mac, dst=P1_MAC) / pkt


def tcp4(src, dst, sport, dport, flags, ttl=64, ident=1, payload=b"", seq=1000, ack=0, df=True, **kw):
    return IP(src=src, dst=dst, ttl=ttl, id=ident, flags="DF" if df else 0, **kw) / TCP(
        sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535) / (Raw(payload) if payload else b"")


def tcp6(src, dst, sport, dport, flags, hlim=64, payload=b"", seq=1000, ack=0, ext=None):
    ip = IPv6(src=src, dst=dst, hlim=hlim)
    if ext is not None:
        ip = ip / ext
    return ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=65535) / (
        Raw(payload) if payload else b"")


def snat_port(h):
    """First full-NAT source-port probe of a flow (one worker owns the whole range): base + (h >> 16) mod span."""
    span = SNAT_HI - SNAT_LO + 1
    return SNAT_LO + ((h >> 16) % span)


# --- IPv4 NAT: handshake to teardown ---
V = "198.19.0.1"
B = B4[10]
step("v4_nat_syn", from_gw(tcp4(C4, V, 40000, 80, "S")), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40000, 8080, "S", ttl=63)))
step("v4_nat_synack_reply", from_backend(bmac4(B), tcp4(B, C4, 8080, 40000, "SA", seq=5000, ack=1001)), "tx:0",
     to_gw(tcp4(V, C4, 80, 40000, "SA", ttl=63, seq=5000, ack=1001)), port=1)
step("v4_nat_ack", from_gw(tcp4(C4, V, 40000, 80, "A", seq=1001, ack=5001)), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40000, 8080, "A", ttl=63, seq=1001, ack=5001)))
step("v4_nat_data", from_gw(tcp4(C4, V, 40000, 80, "PA", payload=b"GET / HTTP/1.1\r\n\r\n", seq=1001, ack=5001)),
     "tx:1", to_backend(bmac4(B), tcp4(C4, B, 40000, 8080, "PA", ttl=63, payload=b"GET / HTTP/1.1\r\n\r\n",
                                      seq=1001, ack=5001)))
step("v4_nat_reply_data", from_backend(bmac4(B), tcp4(B, C4, 8080, 40000, "PA", payload=b"HTTP/1.1 200 OK\r\n",
                                                      seq=5001, ack=1019)), "tx:0",
     to_gw(tcp4(V, C4, 80, 40000, "PA", ttl=63, payload=b"HTTP/1.1 200 OK\r\n", seq=5001, ack=1019)), port=1)

# ICMP fragmentation-needed from a router on the client side about the VIP's packets: steered to the backend.
orig = bytes(IP(src=V, dst=C4, ttl=60, id=77) / TCP(sport=80, dport=40000, flags="PA", seq=5001, ack=1019))[:28]
icmp_in = IP(src=ROUTER4, dst=V, ttl=64, id=9) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(orig)
inner = bytearray(orig)
inner[12:16] = ipaddress.IPv4Address(B).packed  # embedded source: VIP -> backend
inner[20:22] = (8080).to_bytes(2, "big")  # embedded source port: 80 -> 8080
inner[10:12] = b"\0\0"
inner[10:12] = inet_checksum(bytes(inner[:20])).to_bytes(2, "big")
step("v4_nat_icmp_frag_needed_steered", from_gw(icmp_in), "tx:1",
     to_backend(bmac4(B), IP(src=ROUTER4, dst=B, ttl=63, id=9) / ICMP(type=3, code=4, nexthopmtu=1400) /
                Raw(bytes(inner))))

step("v4_nat_fin", from_gw(tcp4(C4, V, 40000, 80, "FA", seq=1019, ack=5018)), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40000, 8080, "FA", ttl=63, seq=1019, ack=5018)))
step("v4_nat_reply_finack", from_backend(bmac4(B), tcp4(B, C4, 8080, 40000, "FA", seq=5018, ack=1020)), "tx:0",
     to_gw(tcp4(V, C4, 80, 40000, "FA", ttl=63, seq=5018, ack=1020)), port=1)
step("v4_nat_last_ack", from_gw(tcp4(C4, V, 40000, 80, "A", seq=1020, ack=5019)), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40000, 8080, "A", ttl=63, seq=1020, ack=5019)))
# An ACK with no state (after an appliance fail-over): picked up, same backend.
step("v4_nat_midflow_pickup", from_gw(tcp4(C4, V, 40099, 80, "A", seq=7, ack=9)), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40099, 8080, "A", ttl=63, seq=7, ack=9)))
# IPv4 options are carried through.
opt = dict(options=[b"\x01\x01\x01\x00"])
step("v4_nat_with_ip_options", from_gw(tcp4(C4, V, 40002, 80, "S", **opt)), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40002, 8080, "S", ttl=63, **opt)))
# 802.1Q tagged: the tag stays.
step("v4_nat_vlan", from_gw(tcp4(C4, V, 40003, 80, "S"), vlan=100), "tx:1",
     to_backend(bmac4(B), tcp4(C4, B, 40003, 8080, "S", ttl=63), vlan=100))
# QinQ tagged DSR below.

# --- full-NAT ---
V = "198.19.0.2"
B = B4[11]
sp = snat_port(flow_hash(C4, V, 40001, 80, 6))
step("v4_fullnat_syn", from_gw(tcp4(C4, V, 40001, 80, "S")), "tx:1",
     to_backend(bmac4(B), tcp4(SNAT4, B, sp, 80, "S", ttl=63)))
step("v4_fullnat_synack_reply", from_backend(bmac4(B), tcp4(B, SNAT4, 80, sp, "SA", seq=1, ack=1001)), "tx:0",
     to_gw(tcp4(V, C4, 80, 40001, "SA", ttl=63, seq=1, ack=1001)), port=1)
step("v4_fullnat_reply_unknown_port", from_backend(bmac4(B), tcp4(B, SNAT4, 80, SNAT_LO + (sp - SNAT_LO + 500) % 10000, "A")),
     "slowpath", port=1)

# --- DSR L2 ---
V = "198.19.0.3"
B = B4[12]
step("v4_dsr_syn", from_gw(tcp4(C4, V, 40004, 80, "S")), "tx:1",
     to_backend(bmac4(B), tcp4(C4, V, 40004, 80, "S", ttl=63)))
step("v4_dsr_ack", from_gw(tcp4(C4, V, 40004, 80, "A", seq=1001, ack=1)), "tx:1",
     to_backend(bmac4(B), tcp4(C4, V, 40004, 80, "A", ttl=63, seq=1001, ack=1)))
qinq_in = Ether(src=GW_MAC, dst=P0_MAC, type=0x88A8) / Dot1Q(vlan=10, type=0x8100) / Dot1Q(vlan=20) / tcp4(
    C4, V, 40005, 80, "S")
qinq_out = Ether(src=P1_MAC, dst=bmac4(B), type=0x88A8) / Dot1Q(vlan=10, type=0x8100) / Dot1Q(vlan=20) / tcp4(
    C4, V, 40005, 80, "S", ttl=63)
step("v4_dsr_qinq", qinq_in, "tx:1", qinq_out)
orig = bytes(IP(src=V, dst=C4, ttl=60, id=78) / TCP(sport=80, dport=40004, flags="A"))[:28]
step("v4_dsr_icmp_frag_needed_steered",
     from_gw(IP(src=ROUTER4, dst=V, ttl=64, id=10) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(orig)), "tx:1",
     to_backend(bmac4(B), IP(src=ROUTER4, dst=V, ttl=63, id=10) / ICMP(type=3, code=4, nexthopmtu=1400) /
                Raw(orig)))

# --- IPIP ---
V = "198.19.0.4"
B = B4[13]
inner = tcp4(C4, V, 40006, 80, "S", ttl=63, tos=0x28)
h = flow_hash(C4, V, 40006, 80, 6)
step("v4_ipip_syn", from_gw(tcp4(C4, V, 40006, 80, "S", tos=0x28)), "tx:1",
     to_backend(bmac4(B), IP(src=tunnel_src(True, h), dst=B, ttl=64, id=0, flags="DF", tos=0x28, proto=4) / inner))
big = tcp4(C4, V, 40007, 80, "A", payload=b"x" * 1460)  # 1500-byte IP packet: 1520 with the outer header
step("v4_ipip_too_big_df", from_gw(big), "tx:0",
     to_gw(IP(src=V, dst=C4, ttl=64, id=0, flags=0, tos=0) / ICMP(type=3, code=4, nexthopmtu=1480) /
           Raw(bytes(big)[:548])))
step("v4_ipip_too_big_no_df", from_gw(tcp4(C4, V, 40008, 80, "A", payload=b"x" * 1460, df=False)),
     "drop:too_big")

# --- GUE (UDP) ---
V = "198.19.0.5"
B = B4[14]
h = flow_hash(C4, V, 5353, 53, 17)
q = IP(src=C4, dst=V, ttl=64, id=3) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34query")
qi = IP(src=C4, dst=V, ttl=63, id=3) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34query")
step("v4_gue_udp", from_gw(q), "tx:1",
     to_backend(bmac4(B), IP(src=tunnel_src(True, h), dst=B, ttl=64, id=0, flags=0, proto=17) /
                UDP(sport=gue_sport(h), dport=6080, chksum=0) / Raw(b"\x00\x04\x00\x00" + bytes(qi))))

# --- all-ports UDP NAT, replies, fragments ---
V = "198.19.0.6"
B = B4[15]
step("v4_udp_allports_nat", from_gw(IP(src=C4, dst=V, id=4) / UDP(sport=5000, dport=9999) / Raw(b"ping")), "tx:1",
     to_backend(bmac4(B), IP(src=C4, dst=B, id=4, ttl=63) / UDP(sport=5000, dport=9999) / Raw(b"ping")))
step("v4_udp_allports_reply", from_backend(bmac4(B), IP(src=B, dst=C4, id=5) / UDP(sport=9999, dport=5000) /
                                           Raw(b"pong")), "tx:0",
     to_gw(IP(src=V, dst=C4, id=5, ttl=63) / UDP(sport=9999, dport=5000) / Raw(b"pong")), port=1)
big_udp = IP(src=C4, dst=V, id=0x4242, flags=0) / UDP(sport=5001, dport=7777) / Raw(bytes(range(250)) * 6)
big_udp_out = IP(src=C4, dst=B, id=0x4242, flags=0, ttl=63) / UDP(sport=5001, dport=7777) / Raw(bytes(range(250)) * 6)
frags_in = fragment(IP(bytes(big_udp)), fragsize=1024)
frags_out = fragment(IP(bytes(big_udp_out)), fragsize=1024)
assert len(frags_in) == 2 == len(frags_out)
step("v4_fragment_first", from_gw(frags_in[0]), "tx:1", to_backend(bmac4(B), frags_out[0]))
step("v4_fragment_second_follows", from_gw(frags_in[1]), "tx:1", to_backend(bmac4(B), frags_out[1]))
lone = fragment(IP(bytes(IP(src=C4, dst=V, id=0x9999, flags=0) / UDP(sport=5002, dport=7777) /
                         Raw(b"z" * 2000))), fragsize=1024)[1]
step("v4_fragment_without_first", from_gw(lone), "drop:fragment_no_first")

# --- affinity and draining ---
V = "198.19.0.7"
step("v4_affinity_skips_draining", from_gw(tcp4("198.18.0.20", V, 1111, 443, "S")), "tx:1",
     to_backend(bmac4(B4[16]), tcp4("198.18.0.20", B4[16], 1111, 443, "S", ttl=63)))
step("v4_affinity_second_conn", from_gw(tcp4("198.18.0.20", V, 2222, 443, "S")), "tx:1",
     to_backend(bmac4(B4[16]), tcp4("198.18.0.20", B4[16], 2222, 443, "S", ttl=63)))
V = "198.19.0.8"
step("v4_drain_flow_before", from_gw(tcp4(C4, V, 41000, 80, "S")), "tx:1",
     to_backend(bmac4(B4[18]), tcp4(C4, B4[18], 41000, 80, "S", ttl=63)))
step("v4_drain_tracked_flow_stays", from_gw(tcp4(C4, V, 41000, 80, "A", seq=1001, ack=1)), "tx:1",
     to_backend(bmac4(B4[18]), tcp4(C4, B4[18], 41000, 80, "A", ttl=63, seq=1001, ack=1)), config="B")
step("v4_drain_new_flow_moves", from_gw(tcp4(C4, V, 41001, 80, "S")), "tx:1",
     to_backend(bmac4(B4[19]), tcp4(C4, B4[19], 41001, 80, "S", ttl=63)), config="B")

# --- ICMP echo, ARP, slow path ---
step("v4_echo_vip", from_gw(IP(src=C4, dst="198.19.0.1", ttl=50, id=6) / ICMP(type=8, id=7, seq=1) / Raw(b"hello")),
     "tx:0", to_gw(IP(src="198.19.0.1", dst=C4, ttl=64, id=6) / ICMP(type=0, id=7, seq=1) / Raw(b"hello")),
     config="B")
arp = Ether(src=GW_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=GW_MAC, psrc=GW4, pdst="198.19.0.1")
step("v4_arp_for_vip", arp, "slowpath", config="B")
step("v4_arp_for_other", Ether(src=GW_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=GW_MAC, psrc=GW4,
                                                                           pdst="198.18.1.77"), "drop:not_for_us",
     config="B")
step("v4_echo_own_address", from_gw(IP(src=C4, dst="198.18.1.1") / ICMP(type=8)), "slowpath", config="B")

# --- drops ---
step("v4_unknown_port", from_gw(tcp4(C4, "198.19.0.1", 40000, 81, "S")), "drop:no_service", config="B")
step("v4_unknown_protocol_to_vip", from_gw(IP(src=C4, dst="198.19.0.1", proto=47) / Raw(b"gre")), "drop:no_service",
     config="B")
step("v4_not_for_us", from_gw(tcp4(C4, "198.18.9.9", 40000, 80, "S")), "drop:not_for_us", config="B")
step("v4_ttl_expired", from_gw(tcp4(C4, "198.19.0.1", 40010, 80, "S", ttl=1)), "drop:ttl_expired", config="B")
bad = bytearray(bytes(from_gw(tcp4(C4, "198.19.0.1", 40011, 80, "S"))))
bad[14 + 10] ^= 0xFF
step("v4_bad_ip_checksum", bytes(bad), "drop:bad_ip_checksum", config="B")
trunc = bytes(from_gw(tcp4(C4, "198.19.0.1", 40012, 80, "S")))[:40]
step("v4_truncated", trunc, "drop:truncated", config="B")
doff = bytearray(bytes(from_gw(tcp4(C4, "198.19.0.1", 40013, 80, "S"))))
doff[14 + 20 + 12] = 0x30  # data offset 3 words
step("v4_tcp_bad_data_offset", bytes(doff), "drop:bad_header_len", config="B")
step("unknown_ethertype", Ether(src=GW_MAC, dst=P0_MAC, type=0x88CC) / Raw(b"\x00" * 46), "drop:unknown_ethertype",
     config="B")
step("three_vlan_tags", Ether(src=GW_MAC, dst=P0_MAC, type=0x88A8) / Dot1Q(vlan=1, type=0x8100) /
     Dot1Q(vlan=2, type=0x8100) / Dot1Q(vlan=3) / tcp4(C4, "198.19.0.1", 1, 80, "S"), "drop:too_many_vlans",
     config="B")

# --- IPv6 ---
V = "2001:db8:100::1"
B = B6[10]
step("v6_nat_syn", from_gw(tcp6(C6, V, 40000, 80, "S")), "tx:1",
     to_backend(bmac6(B), tcp6(C6, B, 40000, 8080, "S", hlim=63)), config="B")
step("v6_nat_synack_reply", from_backend(bmac6(B), tcp6(B, C6, 8080, 40000, "SA", seq=1, ack=1001)), "tx:0",
     to_gw(tcp6(V, C6, 80, 40000, "SA", hlim=63, seq=1, ack=1001)), port=1, config="B")
ext = IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
step("v6_nat_ext_headers", from_gw(tcp6(C6, V, 40001, 80, "S", ext=ext)), "tx:1",
     to_backend(bmac6(B), tcp6(C6, B, 40001, 8080, "S", hlim=63, ext=IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt())),
     config="B")
V = "2001:db8:100::2"
B = B6[11]
sp = snat_port(flow_hash(C6, V, 40002, 80, 6))
step("v6_fullnat_syn", from_gw(tcp6(C6, V, 40002, 80, "S")), "tx:1",
     to_backend(bmac6(B), tcp6(SNAT6, B, sp, 80, "S", hlim=63)), config="B")
step("v6_fullnat_synack_reply", from_backend(bmac6(B), tcp6(B, SNAT6, 80, sp, "SA", seq=1, ack=1001)), "tx:0",
     to_gw(tcp6(V, C6, 80, 40002, "SA", hlim=63, seq=1, ack=1001)), port=1, config="B")
V = "2001:db8:100::3"
B = B6[12]
step("v6_dsr_syn", from_gw(tcp6(C6, V, 40003, 80, "S")), "tx:1",
     to_backend(bmac6(B), tcp6(C6, V, 40003, 80, "S", hlim=63)), config="B")
orig6 = bytes(IPv6(src=V, dst=C6, hlim=60) / TCP(sport=80, dport=40003, flags="A") / Raw(b"y" * 100))
step("v6_dsr_packet_too_big_steered",
     from_gw(IPv6(src=ROUTER6, dst=V, hlim=64) / ICMPv6PacketTooBig(mtu=1400) / Raw(orig6)), "tx:1",
     to_backend(bmac6(B), IPv6(src=ROUTER6, dst=V, hlim=63) / ICMPv6PacketTooBig(mtu=1400) / Raw(orig6)),
     config="B")
V = "2001:db8:100::4"
B = B6[13]
h = flow_hash(C6, V, 40004, 80, 6)
step("v6_ipip_syn", from_gw(tcp6(C6, V, 40004, 80, "S")), "tx:1",
     to_backend(bmac6(B), IPv6(src=tunnel_src(False, h), dst=B, hlim=64, fl=h & 0xFFFFF, nh=41) /
                tcp6(C6, V, 40004, 80, "S", hlim=63)), config="B")
big6 = tcp6(C6, V, 40005, 80, "A", payload=b"x" * 1440)  # 1500-byte packet: 1540 with the outer header
step("v6_ipip_packet_too_big", from_gw(big6), "tx:0",
     to_gw(IPv6(src=V, dst=C6, hlim=64) / ICMPv6PacketTooBig(mtu=1460) / Raw(bytes(big6)[:1232])), config="B")
V = "2001:db8:100::5"
B = B6[14]
h = flow_hash(C6, V, 5353, 53, 17)
q6 = IPv6(src=C6, dst=V) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34query")
q6i = IPv6(src=C6, dst=V, hlim=63) / UDP(sport=5353, dport=53) / Raw(b"\x12\x34query")
step("v6_gue_udp", from_gw(q6), "tx:1",
     to_backend(bmac6(B), IPv6(src=tunnel_src(False, h), dst=B, hlim=64, fl=h & 0xFFFFF) /
                UDP(sport=gue_sport(h), dport=6080) / Raw(b"\x00\x29\x00\x00" + bytes(q6i))), config="B")
step("v6_echo_vip", from_gw(IPv6(src=C6, dst="2001:db8:100::1", hlim=50) / ICMPv6EchoRequest(id=1, seq=2, data=b"hi")),
     "tx:0", to_gw(IPv6(src="2001:db8:100::1", dst=C6, hlim=64) / ICMPv6EchoReply(id=1, seq=2, data=b"hi")),
     config="B")
ns = Ether(src=GW_MAC, dst="33:33:ff:00:00:01") / IPv6(src=GW6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(
    tgt="2001:db8:100::1")
step("v6_neighbor_solicit", ns, "slowpath", config="B")
step("v6_hop_limit_expired", from_gw(tcp6(C6, "2001:db8:100::1", 40009, 80, "S", hlim=1)), "drop:ttl_expired",
     config="B")
step("v6_udp_to_tcp_only_vip", from_gw(IPv6(src=C6, dst="2001:db8:100::1") / UDP(sport=1, dport=80) / Raw(b"x")),
     "drop:no_service", config="B")
bad_chain = IPv6(src=C6, dst="2001:db8:100::1") / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP(sport=1, dport=80)
step("v6_hop_by_hop_not_first", from_gw(bad_chain), "drop:bad_ext_header", config="B")
# A TCP flow to an IPv6 NAT VIP carried in fragments: the first fragment is translated (ports and checksum in it),
# the second follows by the fragment table.
V = "2001:db8:100::1"
B = B6[10]
frag_in = IPv6(src=C6, dst=V) / IPv6ExtHdrFragment(id=0xABCD) / TCP(sport=40020, dport=80, flags="PA") / Raw(b"F" * 1600)
frag_out = IPv6(src=C6, dst=B, hlim=63) / IPv6ExtHdrFragment(id=0xABCD) / TCP(sport=40020, dport=8080, flags="PA") / Raw(
    b"F" * 1600)
fi, fo = fragment6(frag_in, 1280), fragment6(frag_out, 1280)
assert len(fi) == 2 == len(fo)
step("v6_fragment_first", from_gw(fi[0]), "tx:1", to_backend(bmac6(B), fo[0]), config="B")
step("v6_fragment_second_follows", from_gw(fi[1]), "tx:1", to_backend(bmac6(B), fo[1]), config="B")



def frames(raw):
    out = []
    for i, x in enumerate(raw):
        f = Ether(x)
        f.time = i  # fixed timestamps: the fixtures are byte-for-byte reproducible
        out.append(f)
    return out


wrpcap(os.path.join(OUT, "input.pcap"), frames(inputs))
wrpcap(os.path.join(OUT, "expected.pcap"), frames(expected))
with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
    f.write("\n")
with open(os.path.join(OUT, "config.json"), "w") as f:
    json.dump(CONFIG, f, indent=1)
    f.write("\n")
print("%d steps, %d expected frames" % (len(cases), len(expected)))
