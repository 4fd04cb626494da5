"""Scrapes a Prometheus endpoint and parses it with the official client's text-format parser (which raises on
malformed exposition). Prints {"families": {name: type}, "samples": [[name, labels, value], ...]} as JSON."""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    assert r.status == 200, r.status
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
    text = r.read().decode()
families = {}
samples = []
for f in text_string_to_metric_families(text):
    families[f.name] = f.type
    for s in f.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps({"families": families, "samples": samples}))
