#!/usr/bin/env python3
"""Search latency on an existing corpus (e.g. the database bench/search-large.sh leaves):

  search-query.py BASE USER PASSWORD [N] TERM...

logs in as USER (a sender of bench/search.py is `sb<RUN>0`, password `bench-pass-1`;
RUN is the suffix of the rare word in its output) and runs N (default 100) searches of
each term (order_by rank, limit 10). Prints one JSON line: count, p50 and p99 per term.
"""
import http.client
import json
import sys
import time
import urllib.parse

base, user, password = sys.argv[1:4]
rest = sys.argv[4:]
n = int(rest.pop(0)) if rest and rest[0].isdigit() else 100
host = urllib.parse.urlparse(base)
c = http.client.HTTPConnection(host.hostname, host.port, timeout=600)


def call(method, path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body), headers=headers)
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: {r.status} {data[:300]!r}")
    return json.loads(data)


token = call("POST", "/_matrix/client/v3/login", body={
    "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
    "password": password})["access_token"]
out = {"scenario": "search-query", "server": base}
for term in rest:
    times, count = [], None
    for _ in range(n):
        t = time.perf_counter()
        r = call("POST", "/_matrix/client/v3/search", token, {"search_categories": {"room_events": {
            "search_term": term, "filter": {"limit": 10}}}})
        times.append(time.perf_counter() - t)
        count = r["search_categories"]["room_events"].get("count")
    times.sort()
    out[term] = {"count": count, "p50_ms": round(1000 * times[len(times) // 2], 1),
                 "p99_ms": round(1000 * times[min(n - 1, int(n * 0.99))], 1)}
print(json.dumps(out))
