"""A gRPC client nobody here wrote (grpcio), driving edgelbd's API the way any automation would: it discovers the
service by server reflection, builds its messages from the descriptors it received, applies a batch, lists it back,
checks the standard health service, and expects the documented error codes for bad input.

usage: api_client.py HOST:PORT     (exit 0 when every check holds; the first failure is printed)
"""
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

addr = sys.argv[1]
channel = grpc.insecure_channel(addr)
grpc.channel_ready_future(channel).result(timeout=10)

db = ProtoReflectionDescriptorDatabase(channel)
services = db.get_services()
assert "edgelb.v1.LoadBalancer" in services, f"reflection lists {services}"
assert "grpc.health.v1.Health" in services, f"reflection lists {services}"
pool = descriptor_pool.DescriptorPool(db)
svc = pool.FindServiceByName("edgelb.v1.LoadBalancer")
enum = lambda t, n: pool.FindEnumTypeByName(t).values_by_name[n].number


def method(name):
    m = svc.FindMethodByName(name)
    req = message_factory.GetMessageClass(m.input_type)
    resp = message_factory.GetMessageClass(m.output_type)
    if m.server_streaming:
        call = channel.unary_stream(f"/{svc.full_name}/{name}", request_serializer=req.SerializeToString,
                                    response_deserializer=resp.FromString)
    else:
        call = channel.unary_unary(f"/{svc.full_name}/{name}", request_serializer=req.SerializeToString,
                                   response_deserializer=resp.FromString)
    return req, call


def expect_error(code, fn, *args, contains=""):
    try:
        fn(*args, timeout=5)
    except grpc.RpcError as e:
        assert e.code() == code, f"wanted {code}, got {e.code()}: {e.details()}"
        assert contains in e.details(), f"{e.details()!r} does not name {contains!r}"
        return
    raise AssertionError(f"wanted {code}, the call succeeded")


health = health_pb2_grpc.HealthStub(channel)
for name in ["", "edgelb.v1.LoadBalancer"]:
    st = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
    assert st == health_pb2.HealthCheckResponse.SERVING, f"health of {name!r}: {st}"
print("health: SERVING")

ListReq, list_services = method("ListServices")
ApplyReq, apply = method("ApplyServices")
before = list_services(ListReq(), timeout=5)

req = ApplyReq(expected_version=before.version)
for i, port in enumerate([80, 443]):
    s = req.upserts.add(vip="198.19.7.1", port=port, protocol=enum("edgelb.v1.Protocol", "PROTOCOL_TCP"),
                        mode=enum("edgelb.v1.Mode", "MODE_NAT"))
    s.backends.add(address="198.18.0.20", port=8080 + i, weight=1)
    s.backends.add(address="198.18.0.21", port=8080 + i, weight=3)
resp = apply(req, timeout=5)
assert resp.applied and resp.version == before.version + 1, resp
assert len(resp.slots_moved) >= 2, resp
print(f"applied version {resp.version}: {[(m.port, m.moved) for m in resp.slots_moved]}")

after = list_services(ListReq(), timeout=5)
mine = sorted((s.port, [(b.address, b.port, b.weight) for b in s.backends]) for s in after.services
              if s.vip == "198.19.7.1")
assert mine == [(80, [("198.18.0.20", 8080, 1), ("198.18.0.21", 8080, 3)]),
                (443, [("198.18.0.20", 8081, 1), ("198.18.0.21", 8081, 3)])], mine
print(f"listed back: {mine}")

# Bad input: the documented codes, the field named, nothing applied.
bad = ApplyReq()
bad.upserts.add(vip="198.19.7.300", port=80, protocol=enum("edgelb.v1.Protocol", "PROTOCOL_TCP"),
                mode=enum("edgelb.v1.Mode", "MODE_NAT"))
expect_error(grpc.StatusCode.INVALID_ARGUMENT, apply, bad, contains="upserts[0].vip")
bad = ApplyReq()
s = bad.upserts.add(vip="198.19.7.2", port=80, protocol=enum("edgelb.v1.Protocol", "PROTOCOL_TCP"),
                    mode=enum("edgelb.v1.Mode", "MODE_NAT"))
s.backends.add(address="2001:db8::5", port=80)
expect_error(grpc.StatusCode.INVALID_ARGUMENT, apply, bad, contains="upserts[0].backends[0].address")
stale = ApplyReq(expected_version=before.version)
stale.upserts.add(vip="198.19.7.3", port=80, protocol=enum("edgelb.v1.Protocol", "PROTOCOL_TCP"),
                  mode=enum("edgelb.v1.Mode", "MODE_NAT"))
expect_error(grpc.StatusCode.FAILED_PRECONDITION, apply, stale)
gone = ApplyReq()
gone.deletes.add(vip="198.19.9.9", port=80, protocol=enum("edgelb.v1.Protocol", "PROTOCOL_TCP"))
expect_error(grpc.StatusCode.NOT_FOUND, apply, gone, contains="deletes[0]")
GetReq, get_service = method("GetService")
missing = GetReq()
missing.key.vip = "198.19.9.9"
missing.key.port = 80
missing.key.protocol = enum("edgelb.v1.Protocol", "PROTOCOL_TCP")
expect_error(grpc.StatusCode.NOT_FOUND, get_service, missing)
WatchReq, watch_stats = method("WatchStats")
expect_error(grpc.StatusCode.INVALID_ARGUMENT, lambda r, timeout: list(watch_stats(r, timeout=timeout)),
             WatchReq(interval_ms=5), contains="interval_ms")
assert list_services(ListReq(), timeout=5).version == after.version, "a rejected call changed the version"
print("bad input: INVALID_ARGUMENT / FAILED_PRECONDITION / NOT_FOUND as documented; nothing applied")

StatsReq, get_stats = method("GetStats")
st = get_stats(StatsReq(), timeout=5)
assert any(s.vip == "198.19.7.1" and s.port == 443 for s in st.services), st
assert len(st.workers) >= 1, st
print(f"stats: {len(st.services)} services, {len(st.workers)} workers")
print("python grpcio client: all checks passed")
