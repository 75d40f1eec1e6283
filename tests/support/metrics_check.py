"""Parse edgelbd's /metrics (from stdin; OpenMetrics text) with the Prometheus project's own Python parser and check
what it holds.

usage: metrics_check.py EXPECTED_CONFIG_VERSION [DATAPLANE_COUNTER ...] < metrics.txt

Each DATAPLANE_COUNTER (a name from the dataplane's counter table) must be a counter family edgelb_NAME.
"""
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
fams = {f.name: f for f in text_string_to_metric_families(text)}
want = ["edgelb_packets_received", "edgelb_packets_transmitted", "edgelb_flows_new", "edgelb_service_packets",
        "edgelb_backend_packets", "edgelb_backend_healthy", "edgelb_flow_table_entries", "edgelb_flow_table_capacity",
        "edgelb_burst_latency_nanoseconds", "edgelb_config_version", "edgelb_backend_flows_active",
        "edgelb_service_flows_active"]
counters = [f"edgelb_{n}" for n in sys.argv[2:]]
missing = [w for w in want + counters if w not in fams]
assert not missing, f"missing families {missing}; have {sorted(fams)}"
not_counters = [c for c in ["edgelb_packets_received"] + counters if fams[c].type != "counter"]
assert not not_counters, f"not counters: {not_counters}"
version = [s.value for s in fams["edgelb_config_version"].samples]
assert version == [float(sys.argv[1])], f"config version {version}, expected {sys.argv[1]}"
svc = {(s.labels["vip"], s.labels["protocol"], s.labels["port"]) for s in fams["edgelb_service_packets"].samples}
assert ("198.19.7.1", "tcp", "443") in svc, svc
healthy = {s.labels["backend"]: s.value for s in fams["edgelb_backend_healthy"].samples
           if s.labels["vip"] == "198.19.0.1"}
assert healthy and all(v == 1.0 for v in healthy.values()), healthy
cap = [s.value for s in fams["edgelb_flow_table_capacity"].samples if s.labels["family"] == "ipv4"]
assert cap and all(c > 0 for c in cap), cap
print(f"metrics: {len(fams)} families parsed, {len(counters)} dataplane counters; services {sorted(svc)}; backends healthy {healthy}")
