"""A Kubernetes API server emulator for edgelb's tests (not shipped).

It serves the real Kubernetes JSON wire format for what edgelb and kubectl use: Services (with the status
subresource), EndpointSlices, Leases, Events, Namespaces and CustomResourceDefinitions — a CRD, once created, serves
its resources (each served version, its scope, its status subresource, its printer columns; the schema is neither
enforced nor defaulted); list and watch with resourceVersion, bookmarks and
`410 Gone` for expired versions; create, get, replace, delete, merge patch (RFC 7386; kubectl's strategic merge patch
is applied as a merge patch, which is what it amounts to for the fields used here) and JSON patch; and the discovery
documents kubectl needs (`/api`, `/apis`, group versions, `/version`). State is in memory.

usage: apiserver.py PORT [--host ADDR] [--history N] [--seed FILE]
(plain HTTP on ADDR:PORT, default 127.0.0.1; prints "ready"; --seed: a JSON list of objects, each with apiVersion,
kind and metadata.namespace/name, stored before serving, as if created)
"""
import copy
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# (group, version, plural) -> (kind, namespaced, has status subresource)
RESOURCES = {
    ("", "v1", "services"): ("Service", True, True),
    ("", "v1", "namespaces"): ("Namespace", False, False),
    ("", "v1", "events"): ("Event", True, False),
    ("discovery.k8s.io", "v1", "endpointslices"): ("EndpointSlice", True, False),
    ("coordination.k8s.io", "v1", "leases"): ("Lease", True, False),
    ("events.k8s.io", "v1", "events"): ("Event", True, False),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions"): ("CustomResourceDefinition", False, True),
}
BUILTIN = set(RESOURCES)
COLUMNS = {}          # (group, plural) -> additionalPrinterColumns of a custom resource
SHORT = {("", "services"): ["svc"], ("apiextensions.k8s.io", "customresourcedefinitions"): ["crd", "crds"]}

LOCK = threading.Condition()
STORE = {}            # (group, plural, namespace, name) -> object
EVENTS = []           # (resourceVersion, group, plural, namespace, type, object)
RV = [1]
HISTORY = 1000        # watch events kept; older resourceVersions get 410 Gone


def api_version(group, version):
    return f"{group}/{version}" if group else version


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = copy.deepcopy(target)
    for k, v in patch.items():
        if k.startswith("$"):       # strategic merge patch directives: not needed for the fields used here
            continue
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(idx, op["value"])
                else:
                    parent[idx] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        else:
            raise ValueError(f"json patch op {op['op']} not supported")
    return doc


def group_doc(g):
    versions = sorted({v for (gg, v, _) in RESOURCES if gg == g})
    docs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
    return {"name": g, "versions": docs, "preferredVersion": docs[0]}


def served_crd(crd):
    """Serve a CRD's resources (every served version) and mark it Established, as the API server does."""
    spec = crd.get("spec", {})
    group, names = spec.get("group", ""), spec.get("names", {})
    plural, kind = names.get("plural"), names.get("kind")
    if not group or not plural or not kind:
        raise ValueError("spec.group, spec.names.plural and spec.names.kind are required")
    for (g, v, pl) in list(RESOURCES):
        if (g, v, pl) not in BUILTIN and g == group and pl == plural:
            del RESOURCES[(g, v, pl)]
    for v in spec.get("versions", []):
        if v.get("served", True):
            RESOURCES[(group, v["name"], plural)] = (kind, spec.get("scope") == "Namespaced",
                                                    "status" in (v.get("subresources") or {}))
            COLUMNS[(group, plural)] = v.get("additionalPrinterColumns") or []
            SHORT[(group, plural)] = names.get("shortNames") or []
    crd["status"] = {"acceptedNames": names, "storedVersions": [v["name"] for v in spec.get("versions", [])],
                     "conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                                     "message": "the initial names have been accepted", "lastTransitionTime": now()},
                                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                                     "message": "no conflicts found", "lastTransitionTime": now()}]}


def unserve_crd(crd):
    """Stop serving a deleted CRD's resources; its objects go with it."""
    spec = crd.get("spec", {})
    group, plural = spec.get("group", ""), spec.get("names", {}).get("plural")
    for k in [k for k in RESOURCES if k not in BUILTIN and k[0] == group and k[2] == plural]:
        del RESOURCES[k]
    for k in [k for k in STORE if k[0] == group and k[1] == plural]:
        del STORE[k]


def json_path(obj, path):
    """The part of kubectl's JSONPath printer columns use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`."""
    import re
    cur = [obj]
    for step in re.findall(r'\.([A-Za-z0-9_]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_]+)==\\?"([^"\\]*)\\?"\)\]', path):
        key, idx, fkey, fval = step
        nxt = []
        for c in cur:
            if key and isinstance(c, dict) and key in c:
                nxt.append(c[key])
            elif idx and isinstance(c, list) and int(idx) < len(c):
                nxt.append(c[int(idx)])
            elif fkey and isinstance(c, list):
                nxt.extend(x for x in c if isinstance(x, dict) and str(x.get(fkey)) == fval)
        cur = nxt
    return ",".join(json.dumps(c) if isinstance(c, (list, dict)) else str(c) for c in cur)


def table(kind, items, rv, custom=None):
    """A meta.k8s.io/v1 Table, as kubectl asks for: the columns `kubectl get` prints."""
    cols = [("Name", "string")]
    if custom is not None:
        cols += [(c["name"], "string") for c in custom]
    if kind == "Service":
        cols += [("Type", "string"), ("Cluster-IP", "string"), ("External-IP", "string"), ("Port(s)", "string")]
    elif kind == "EndpointSlice":
        cols += [("AddressType", "string"), ("Ports", "string"), ("Endpoints", "string")]
    rows = []
    for o in items:
        cells = [o["metadata"]["name"]]
        if kind == "Service":
            spec = o.get("spec", {})
            ingress = o.get("status", {}).get("loadBalancer", {}).get("ingress") or []
            ext = ",".join(i.get("ip", "") for i in ingress) or "<pending>"
            ports = ",".join(f"{p['port']}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
            cells += [spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), ext, ports]
        elif kind == "EndpointSlice":
            ports = ",".join(str(p.get("port")) for p in o.get("ports") or [])
            eps = ",".join(a for e in o.get("endpoints") or [] for a in e.get("addresses", []))
            cells += [o.get("addressType", ""), ports, eps]
        elif custom is not None:
            cells += [json_path(o, c["jsonPath"]) for c in custom]
        rows.append({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                "metadata": o["metadata"]}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
            "columnDefinitions": [{"name": n, "type": t, "format": "", "description": n, "priority": 0} for n, t in cols],
            "rows": rows}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if "-v" in sys.argv:
            sys.stderr.write("apiserver: " + fmt % args + "\n")

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null") if n else None

    # ---- routing -------------------------------------------------------------------------------------------------
    def route(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        p = [x for x in u.path.split("/") if x]
        if not p:
            return None, q
        if p[0] == "api":
            group, rest = "", p[1:]
        elif p[0] == "apis":
            if len(p) < 2:
                return ("discovery-apis",), q
            group, rest = p[1], p[2:]
        else:
            return (p[0],), q
        if not rest:
            return ("discovery-group", group), q
        version, rest = rest[0], rest[1:]
        if not rest:
            return ("discovery-version", group, version), q
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural, rest = rest[0], rest[1:]
        name = rest[0] if rest else None
        sub = rest[1] if len(rest) > 1 else None
        if plural == "namespaces" and ns is None and name:
            pass
        return ("resource", group, version, ns, plural, name, sub), q

    def discovery(self, r):
        if r[0] == "version":
            return self.send_json(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-edgelb-emulator",
                                        "platform": "linux/amd64"})
        if r[0] == "discovery-group" and r[1] == "":
            return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if r[0] == "discovery-apis":
            with LOCK:
                groups = sorted({g for (g, _, _) in RESOURCES if g})
                return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                            "groups": [group_doc(g) for g in groups]})
        if r[0] == "discovery-group":
            with LOCK:
                if not any(g == r[1] for (g, _, _) in RESOURCES):
                    return self.send_json(404, status(404, "NotFound", f"no group {r[1]}"))
                doc = group_doc(r[1])
            doc.update({"kind": "APIGroup", "apiVersion": "v1"})
            return self.send_json(200, doc)
        if r[0] == "discovery-version":
            group, version = r[1], r[2]
            res = []
            with LOCK:
                served = list(RESOURCES.items())
            for (g, v, plural), (kind, namespaced, has_status) in served:
                if g == group and v == version:
                    res.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                                "shortNames": SHORT.get((g, plural), [])})
                    if has_status:
                        res.append({"name": f"{plural}/status", "singularName": "", "namespaced": namespaced,
                                    "kind": kind, "verbs": ["get", "patch", "update"]})
            if not res:
                return self.send_json(404, status(404, "NotFound", f"no group version {group}/{version}"))
            return self.send_json(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                        "groupVersion": api_version(group, version), "resources": res})
        return self.send_json(404, status(404, "NotFound", f"{self.path} not found"))

    def handle_any(self, method):
        try:
            r, q = self.route()
            if r is None or r[0] != "resource":
                if method != "GET":
                    return self.send_json(405, status(405, "MethodNotAllowed", "discovery is read-only"))
                return self.discovery(r or ("none",))
            _, group, version, ns, plural, name, sub = r
            with LOCK:
                spec = RESOURCES.get((group, version, plural))
            if spec is None:
                return self.send_json(404, status(404, "NotFound", f"the server could not find the requested resource ({plural})"))
            kind, namespaced, has_status = spec
            if namespaced and plural != "namespaces" and ns is None and method not in ("GET",):
                return self.send_json(400, status(400, "BadRequest", "namespace required"))
            if method == "GET" and name is None:
                if q.get("watch") in ("1", "true"):
                    return self.watch(group, version, plural, kind, ns, q)
                return self.list(group, version, plural, kind, ns)
            if method == "GET":
                return self.get(group, plural, kind, ns, name)
            if method == "POST":
                return self.create(group, version, plural, kind, ns, self.read_body())
            if method == "PUT":
                return self.replace(group, version, plural, kind, ns, name, sub, self.read_body())
            if method == "PATCH":
                return self.patch(group, version, plural, kind, ns, name, sub)
            if method == "DELETE":
                self.read_body()  # DeleteOptions, if any: must be consumed before the next request on the connection
                return self.delete(group, plural, kind, ns, name)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - a bad request must never kill the emulator
            try:
                self.send_json(400, status(400, "BadRequest", f"{type(e).__name__}: {e}"))
            except Exception:  # noqa: BLE001
                pass

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    # ---- storage -------------------------------------------------------------------------------------------------
    def record(self, group, plural, ns, typ, obj):
        EVENTS.append((int(obj["metadata"]["resourceVersion"]), group, plural, ns, typ, copy.deepcopy(obj)))
        del EVENTS[:-HISTORY]
        LOCK.notify_all()

    def stamp(self, obj):
        RV[0] += 1
        obj["metadata"]["resourceVersion"] = str(RV[0])

    def list(self, group, version, plural, kind, ns):
        with LOCK:
            items = [copy.deepcopy(o) for (g, pl, n, _), o in sorted(STORE.items())
                     if g == group and pl == plural and (ns is None or n == ns)]
            rv = str(RV[0])
        if "as=Table" in (self.headers.get("Accept") or ""):
            return self.send_json(200, table(kind, items, rv, COLUMNS.get((group, plural))))
        self.send_json(200, {"kind": f"{kind}List", "apiVersion": api_version(group, version),
                             "metadata": {"resourceVersion": rv}, "items": items})

    def get(self, group, plural, kind, ns, name):
        with LOCK:
            o = STORE.get((group, plural, ns, name))
        if o is None:
            return self.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
        if "as=Table" in (self.headers.get("Accept") or ""):
            return self.send_json(200, table(kind, [o], o["metadata"].get("resourceVersion", ""),
                                             COLUMNS.get((group, plural))))
        self.send_json(200, o)

    def create(self, group, version, plural, kind, ns, body):
        if not isinstance(body, dict) or not body.get("metadata", {}).get("name"):
            if isinstance(body, dict) and body.get("metadata", {}).get("generateName"):
                body["metadata"]["name"] = body["metadata"]["generateName"] + uuid.uuid4().hex[:5]
            else:
                return self.send_json(422, status(422, "Invalid", "metadata.name: Required value"))
        name = body["metadata"]["name"]
        with LOCK:
            if (group, plural, ns, name) in STORE:
                return self.send_json(409, status(409, "AlreadyExists", f'{plural} "{name}" already exists'))
            body["apiVersion"], body["kind"] = api_version(group, version), kind
            md = body["metadata"]
            if ns is not None:
                md["namespace"] = ns
            md["uid"] = str(uuid.uuid4())
            md["creationTimestamp"] = now()
            md.setdefault("generation", 1)
            if kind == "Service":
                body.setdefault("status", {"loadBalancer": {}})
            if plural == "customresourcedefinitions":
                served_crd(body)
            self.stamp(body)
            STORE[(group, plural, ns, name)] = body
            self.record(group, plural, ns, "ADDED", body)
            out = copy.deepcopy(body)
        self.send_json(201, out)

    def update(self, group, plural, ns, name, sub, new):
        """Store `new` for an existing object; with sub == "status" only its status changes."""
        cur = STORE[(group, plural, ns, name)]
        if sub == "status":
            merged = copy.deepcopy(cur)
            merged["status"] = new.get("status", {})
        else:
            merged = new
            if "status" in cur:
                merged["status"] = cur["status"]
            for k in ("uid", "creationTimestamp", "namespace"):
                if k in cur["metadata"]:
                    merged["metadata"][k] = cur["metadata"][k]
        merged["metadata"]["name"] = name
        gen = cur["metadata"].get("generation", 1)
        merged["metadata"]["generation"] = gen + 1 if sub != "status" and merged.get("spec") != cur.get("spec") else gen
        if plural == "customresourcedefinitions" and sub != "status":
            served_crd(merged)
        self.stamp(merged)
        STORE[(group, plural, ns, name)] = merged
        self.record(group, plural, ns, "MODIFIED", merged)
        return copy.deepcopy(merged)

    def replace(self, group, version, plural, kind, ns, name, sub, body):
        with LOCK:
            cur = STORE.get((group, plural, ns, name))
            if cur is None:
                return self.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            want = body.get("metadata", {}).get("resourceVersion")
            if want and want != cur["metadata"]["resourceVersion"]:
                return self.send_json(409, status(409, "Conflict",
                                                  f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified'))
            body["apiVersion"], body["kind"] = api_version(group, version), kind
            out = self.update(group, plural, ns, name, sub, body)
        self.send_json(200, out)

    def patch(self, group, version, plural, kind, ns, name, sub):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0]
        body = self.read_body()
        with LOCK:
            cur = STORE.get((group, plural, ns, name))
            if cur is None:
                return self.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            if ctype == "application/json-patch+json":
                new = json_patch(cur, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = merge_patch(cur, body)
            else:
                return self.send_json(415, status(415, "UnsupportedMediaType", f"patch type {ctype}"))
            out = self.update(group, plural, ns, name, sub, new)
        self.send_json(200, out)

    def delete(self, group, plural, kind, ns, name):
        with LOCK:
            cur = STORE.pop((group, plural, ns, name), None)
            if cur is None:
                return self.send_json(404, status(404, "NotFound", f'{plural} "{name}" not found'))
            self.stamp(cur)
            self.record(group, plural, ns, "DELETED", cur)
            if plural == "customresourcedefinitions":
                unserve_crd(cur)
            out = copy.deepcopy(cur)
        self.send_json(200, out)

    def watch(self, group, version, plural, kind, ns, q):
        since = int(q.get("resourceVersion") or 0)
        timeout = min(int(q.get("timeoutSeconds") or 300), 300)
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        with LOCK:
            oldest = EVENTS[0][0] if EVENTS else RV[0]
            if since and since < oldest - 1 and len(EVENTS) >= HISTORY:
                gone = status(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
                return self.send_json(410, gone)
            if not since:
                # A watch without a version starts with the current state as ADDED events.
                initial = [(o["metadata"]["resourceVersion"], o) for (g, pl, n, _), o in sorted(STORE.items())
                           if g == group and pl == plural and (ns is None or n == ns)]
                since = RV[0]
            else:
                initial = []
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        for _, o in initial:
            chunk({"type": "ADDED", "object": o})
        deadline = time.time() + timeout
        last_bookmark = time.time()
        seen = since
        try:
            while time.time() < deadline:
                def mine():
                    return [e for e in EVENTS if e[0] > seen and e[1] == group and e[2] == plural
                            and (ns is None or e[3] == ns)]

                with LOCK:
                    pending = mine()
                    if not pending:
                        LOCK.wait(timeout=0.5)
                        pending = mine()
                    # Read under the same lock as `pending`: with nothing pending, every event of ours up to the
                    # current version has been sent, so a bookmark may advance to it without skipping one.
                    newest = pending[-1][0] if pending else RV[0]
                for rv, _, _, _, typ, obj in pending:
                    chunk({"type": typ, "object": obj})
                    seen = rv
                if not pending and bookmarks and time.time() - last_bookmark > 2:
                    chunk({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version(group, version),
                                                          "metadata": {"resourceVersion": str(max(seen, newest))}}})
                    seen = max(seen, newest)
                    last_bookmark = time.time()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass


def seed(path):
    """Store the objects of a JSON list as if each had been created (benchmarks start from thousands of them)."""
    plurals = {(kind, g): pl for (g, _, pl), (kind, _, _) in RESOURCES.items()}
    with open(path) as f:
        objects = json.load(f)
    for o in objects:
        group = o["apiVersion"].rpartition("/")[0]
        plural = plurals.get((o["kind"], group))
        if plural is None:
            sys.exit(f"--seed: {o['apiVersion']} {o['kind']} is not served")
        md = o["metadata"]
        ns = md.setdefault("namespace", "default")
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", now())
        if o["kind"] == "Service":
            o.setdefault("status", {"loadBalancer": {}})
        RV[0] += 1
        md["resourceVersion"] = str(RV[0])
        STORE[(group, plural, ns, md["name"])] = o


def main():
    global HISTORY
    port = int(sys.argv[1])
    if "--history" in sys.argv:
        HISTORY = int(sys.argv[sys.argv.index("--history") + 1])
    STORE[("", "namespaces", None, "default")] = {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": "default", "resourceVersion": "1"}}
    if "--seed" in sys.argv:
        seed(sys.argv[sys.argv.index("--seed") + 1])
    host = sys.argv[sys.argv.index("--host") + 1] if "--host" in sys.argv else "127.0.0.1"
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
