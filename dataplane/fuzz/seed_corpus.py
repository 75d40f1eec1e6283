#!/usr/bin/env python3
"""Seed the `process` fuzz corpus with the golden-table inputs: one file per frame, prefixed by the control byte the
target reads (bit 0: ingress port). Usage: python3 seed_corpus.py [CORPUS_DIR]"""
import json
import os
import struct
import sys

here = os.path.dirname(os.path.abspath(__file__))
golden = os.path.join(here, "..", "tests", "golden")
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "process")
os.makedirs(out, exist_ok=True)
with open(os.path.join(golden, "input.pcap"), "rb") as f:
    data = f.read()
magic = struct.unpack("<I", data[:4])[0]
endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
frames, off = [], 24
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
    frames.append(data[off + 16:off + 16 + incl])
    off += 16 + incl
cases = json.load(open(os.path.join(golden, "cases.json")))
for c in cases:
    with open(os.path.join(out, "golden-%s" % c["name"]), "wb") as f:
        f.write(bytes([c["in_port"] & 1]) + frames[c["input"]])
print("%d seeds in %s" % (len(cases), out))
