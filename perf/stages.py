#!/usr/bin/env python3
"""Where a packet's instructions go: one `edgelb-perf` case under callgrind, each instruction of the worker's
measured polls attributed to the chain of functions inlined at its address, printed as a tree in instructions per
packet. The release build inlines the whole burst loop into `Worker::run_burst`, so a per-function profile shows one
line; this shows its stages.

    cargo build --release -p edgelb-perf
    perf/stages.py [--target DIR] [--packets N] [--depth D] [--min X] -- --mode nat --flows 10000

Needs valgrind and addr2line (Debian `valgrind`, `binutils`); the release profile keeps line tables (`debug = 1`).
Counts are exact for the run (no machine noise). Inlined frames are named by their last two path segments, generic
arguments dropped; `(self)` is what a frame's own lines cost, outside the frames inlined into it. The worker's
receive and transmit through the replay port (the harness) are under `Worker::poll` and `Worker::flush_port`.
"""

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile


def short(name):
    """`a::b::C<T>::f` -> `C::f`."""
    prev = None
    while prev != name:
        prev = name
        name = re.sub(r"<(?!impl )(?![^<>]* as )[^<>]*>", "", name)  # generic arguments
        name = re.sub(r"<([^<>]*) as [^<>]*>", lambda m: m.group(1).split("::")[-1], name)  # `<T as Tr>`: `T`
        # `<impl T>` and `<impl Tr for T>`, once their generics are gone: `T`.
        name = re.sub(r"<impl (?:[^<>]* for )?([^<>]*)>", lambda m: m.group(1).split("::")[-1], name)
    name = name.replace("{{closure}}", "closure")
    return "::".join(name.split("::")[-2:])


def costs(path):
    """Self cost per instruction address of the objects that are not shared libraries, from a callgrind file
    written with --dump-instr=yes (positions: instr line; subpositions compressed as +n, -n or *)."""
    out, fns = collections.Counter(), {}
    # Compressed names: `ob=(3) /usr/lib/...` the first time, `ob=(3)` after.
    names, cur, addr, call = {"ob": {}, "fn": {}}, {"ob": "", "fn": "??"}, 0, False
    with open(path) as f:
        for line in f:
            m = re.match(r"^(ob|fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m:
                kind, num, name = m.groups()
                if name:
                    names[kind][num] = name
                cur[kind] = names[kind].get(num, "??" if kind == "fn" else "")
                continue
            if line.startswith("calls="):
                call = True  # the next cost line is the call's inclusive cost
                continue
            if not line or line[0] not in "0123456789+-*":
                continue
            parts = line.split()
            a = parts[0]
            if a.startswith("0x"):
                addr = int(a, 16)
            elif a[0] == "+":
                addr += int(a[1:], 0)
            elif a[0] == "-":
                addr -= int(a[1:], 0)
            if call:
                call = False
                continue
            if ".so" not in cur["ob"] and len(parts) >= 3:
                out[addr] += int(parts[2])
                fns[addr] = cur["fn"]
    return out, fns


def chains(binary, addrs):
    """Inline chain of each address, outermost function first."""
    res = {}
    args = ["addr2line", "-i", "-f", "-C", "-a", "-e", binary]
    for i in range(0, len(addrs), 2000):
        lines = subprocess.run(args + [hex(a) for a in addrs[i : i + 2000]], capture_output=True, text=True,
                               check=True).stdout.splitlines()
        cur, j = None, 0
        while j < len(lines):
            if lines[j].startswith("0x"):
                cur = int(lines[j], 16)
                res[cur] = []
                j += 1
            else:
                res[cur].append(short(lines[j]))
                j += 2  # the function's name, then its file:line
    return {a: list(reversed(c)) for a, c in res.items()}


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into `head`
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="target")
    ap.add_argument("--packets", type=int, default=200000)
    ap.add_argument("--depth", type=int, default=4, help="levels of inlined frames shown")
    ap.add_argument("--min", type=float, default=2.0, help="hide frames below this many instructions a packet")
    ap.add_argument("args", nargs="*", help="edgelb-perf arguments (after --)")
    o = ap.parse_args()
    binary = os.path.join(o.target, "release", "edgelb-perf")
    if not os.access(binary, os.X_OK):
        sys.exit(f"no {binary}: cargo build --release -p edgelb-perf")
    with tempfile.TemporaryDirectory() as d:
        cmd = ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--separate-threads=yes", "--collect-atstart=no",
               "--toggle-collect=*measured_polls*", f"--callgrind-out-file={d}/cg.%p", binary,
               "--packets", str(o.packets)] + o.args
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        # The worker's thread is the file with the most instructions counted.
        best, total = None, 0
        for f in os.listdir(d):
            with open(os.path.join(d, f)) as fh:
                t = next((int(l.split()[1]) for l in fh if l.startswith("totals:") or l.startswith("summary:")), 0)
            if t > total:
                best, total = f, t
        if best is None:
            sys.exit("callgrind counted nothing (no measured polls?)")
        c, fns = costs(os.path.join(d, best))
    ch = chains(binary, sorted(c))
    # Where the line tables know nothing (`??`), the function callgrind names.
    ch = {a: (p if p and p[0] != "??" else [short(fns.get(a, "??"))]) for a, p in ch.items()}
    tree = {}
    for a, n in c.items():
        node = tree
        path = ch.get(a) or ["??"]
        for fn in path[: o.depth + 1]:
            ent = node.setdefault(fn, [0, {}])
            ent[0] += n
            node = ent[1]
    per = float(o.packets)
    print(f"{total / per:.0f} instructions a packet in the worker's measured polls "
          f"({' '.join(o.args)}; {o.packets} packets; libraries included in the total, not in the tree)")

    def show(node, depth):
        for fn, (n, kids) in sorted(node.items(), key=lambda kv: -kv[1][0]):
            if n / per < o.min:
                continue
            print(f"{n / per:8.1f}  {'  ' * depth}{fn}")
            own = n - sum(k[0] for k in kids.values())
            if kids and own / per >= o.min:
                print(f"{own / per:8.1f}  {'  ' * (depth + 1)}(self)")
            show(kids, depth + 1)

    show(tree, 0)


if __name__ == "__main__":
    main()
