#!/usr/bin/env python3
"""Server-side search on one homeserver (plain HTTP, loopback, keep-alive connections).

  search.py BASE ROOMS MESSAGES [QUERIES]

8 senders join ROOMS rooms and send MESSAGES messages round-robin over them (bodies of 6-14
words drawn from a 5,000-word vocabulary with Zipf-like frequencies; one message in 10,000
also carries a rare word). Reports: messages/s while sending; seconds from the last send
until the last message is found by /search (index lag); p50/p99 latency of QUERIES (default
50) searches each for a common word, a rare word, a two-word phrase and a prefix, by one
sender who is in every room. Prints one JSON line.
"""
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse
import uuid

base, rooms_n, messages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
queries = int(sys.argv[4]) if len(sys.argv) > 4 else 50
host = urllib.parse.urlparse(base)
RUN = uuid.uuid4().hex[:6]
local = threading.local()


def call(method, path, token=None, body=None):
    c = getattr(local, "conn", None)
    if c is None:
        c = local.conn = http.client.HTTPConnection(host.hostname, host.port, timeout=600)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    try:
        c.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = c.getresponse()
        data = r.read()
    except (http.client.HTTPException, ConnectionError):
        local.conn = None
        return call(method, path, token, body)
    if r.status != 200:
        raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data or b"{}")


q = lambda s: urllib.parse.quote(s, safe="")
rng = random.Random(7)
syll = ["ka", "lo", "mi", "ne", "ru", "to", "sa", "vi", "de", "po", "ba", "el", "ur", "an", "is"]
vocab = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(20000)})[:5000]
rng.shuffle(vocab)
weights = [1 / (i + 1) for i in range(len(vocab))]
common, second = vocab[0], vocab[1]
rare = f"zyzzyva{RUN}"


def body(i):
    words = rng.choices(vocab, weights, k=rng.randint(6, 14))
    if i % 10000 == 5000:
        words.insert(3, rare)
    if i % 50 == 0:
        words[1:1] = [common, second]
    return " ".join(words)


senders = []
for i in range(8):
    r = call("POST", "/_matrix/client/v3/register", body={
        "username": f"sb{RUN}{i}", "password": "bench-pass-1", "auth": {"type": "m.login.dummy"}})
    senders.append(r["access_token"])
rooms = []
for i in range(rooms_n):
    room = call("POST", "/_matrix/client/v3/createRoom", senders[0], {"preset": "public_chat"})["room_id"]
    for t in senders[1:]:
        call("POST", f"/_matrix/client/v3/join/{q(room)}", t, {})
    rooms.append(room)
bodies = [body(i) for i in range(messages)]


def send(w, lo, hi):
    for i in range(lo + w, hi, len(senders)):
        call("PUT", f"/_matrix/client/v3/rooms/{q(rooms[i % rooms_n])}/send/m.room.message/{RUN}{i}",
             senders[w], {"msgtype": "m.text", "body": bodies[i]})


def search(term, order="rank"):
    return call("POST", "/_matrix/client/v3/search", senders[0], {"search_categories": {"room_events": {
        "search_term": term, "order_by": order, "filter": {"limit": 10}}}})["search_categories"]["room_events"]


# CHECKPOINTS="100000 500000": measure at these totals too (one JSON line each), so a long
# run gives figures along the way.
checkpoints = sorted({int(c) for c in os.environ.get("CHECKPOINTS", "").split() if int(c) < messages} | {messages})
sent, send_s = 0, 0.0
for upto in checkpoints:
    t0 = time.perf_counter()
    threads = [threading.Thread(target=send, args=(w, sent, upto)) for w in range(len(senders))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    send_s += time.perf_counter() - t0
    sent = upto
    if queries == 0:  # send rate only (a server without search)
        continue
    last = f"lastmarker{RUN}x{upto}"
    call("PUT", f"/_matrix/client/v3/rooms/{q(rooms[0])}/send/m.room.message/{RUN}last{upto}", senders[0],
         {"msgtype": "m.text", "body": f"the end {last}"})
    t0 = time.perf_counter()
    while not search(last).get("results"):
        if time.perf_counter() - t0 > 3600:
            raise SystemExit("the last message never became searchable")
        time.sleep(0.05)
    lag = time.perf_counter() - t0
    out = {"scenario": "search", "server": base, "rooms": rooms_n, "messages": upto,
           "send_msgs_per_s": round(upto / send_s, 1), "index_lag_s": round(lag, 2)}
    for label, term in (("common", common), ("rare", rare), ("phrase", f'"{common} {second}"'),
                        ("prefix", common[:3] + "*")):
        times, count = [], None
        for _ in range(queries):
            t = time.perf_counter()
            r = search(term)
            times.append(time.perf_counter() - t)
            count = r.get("count")
        times.sort()
        out[label] = {"term": term, "count": count, "p50_ms": round(1000 * times[len(times) // 2], 1),
                      "p99_ms": round(1000 * times[min(len(times) - 1, int(len(times) * 0.99))], 1)}
    print(json.dumps(out), flush=True)
if queries == 0:
    print(json.dumps({"scenario": "search-send-only", "server": base, "rooms": rooms_n,
                      "messages": messages, "send_msgs_per_s": round(messages / send_s, 1)}))
