#!/usr/bin/env python3
"""Media repository throughput on one homeserver (plain HTTP, loopback).

  media.py BASE PID [SIZES_MIB...]   (default sizes: 1 50)

For each size: uploads (POST /_matrix/media/v3/upload) and downloads (authenticated
GET /_matrix/client/v1/media/download) of random bytes, sequentially, and reports MiB/s of
each and the server's resident memory: its peak (VmHWM) after each size and the highest
RSS sampled (every 20 ms) while that size ran. Counts: COUNT_<size> env or 20 for sizes
under 10 MiB, 4 above. Prints one JSON line. Registration uses m.login.dummy.
"""
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid

base, pid = sys.argv[1], int(sys.argv[2])
sizes = [int(s) for s in sys.argv[3:]] or [1, 50]
host = urllib.parse.urlparse(base)


def conn():
    return http.client.HTTPConnection(host.hostname, host.port, timeout=600)


def call(method, path, token=None, body=None, ctype="application/json"):
    c = conn()
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = "Bearer " + token
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def status_kib(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, status_kib("VmRSS"))
            time.sleep(0.02)


user = "mb" + uuid.uuid4().hex[:8]
s, d = call("POST", "/_matrix/client/v3/register", body={
    "username": user, "password": "bench-password-1", "auth": {"type": "m.login.dummy"}})
assert s == 200, d
token = json.loads(d)["access_token"]

out = {"scenario": "media", "server": base, "rss_start_mib": round(status_kib("VmRSS") / 1024, 1)}
for size in sizes:
    count = int(os.environ.get(f"COUNT_{size}", 20 if size < 10 else 4))
    blob = os.urandom(size * 1024 * 1024)
    sampler = Sampler()
    sampler.start()
    ids = []
    t0 = time.perf_counter()
    for i in range(count):
        # Different bytes each time, so no server can deduplicate the uploads.
        payload = i.to_bytes(4, "big") + blob[4:]
        s, d = call("POST", "/_matrix/media/v3/upload?filename=b.bin", token, payload,
                    "application/octet-stream")
        assert s == 200, (s, d[:200])
        ids.append(json.loads(d)["content_uri"][len("mxc://"):])
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    for mxc in ids:
        c = conn()
        c.request("GET", f"/_matrix/client/v1/media/download/{mxc}",
                  headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        got = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        c.close()
        assert r.status == 200 and got == len(blob), (r.status, got)
    down = time.perf_counter() - t0
    sampler.running = False
    sampler.join()
    total = count * size
    out[f"{size}MiB"] = {
        "count": count,
        "upload_mib_s": round(total / up, 1),
        "download_mib_s": round(total / down, 1),
        "rss_peak_sampled_mib": round(sampler.peak / 1024, 1),
        "vmhwm_mib": round(status_kib("VmHWM") / 1024, 1),
    }
print(json.dumps(out))
