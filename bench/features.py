#!/usr/bin/env python3
"""Feature-shaped loads on one homeserver, through the client API (plain HTTP, loopback).

  push N MESSAGES   8 senders send MESSAGES messages as fast as the server takes them into
                    a room with N other members (push rules evaluated for each of them),
                    then into a room with no other members; messages/s for both.
  claim N           N devices (one user each) upload 5 signed-looking one-time keys; one
                    POST /keys/claim takes one key of every device. Seconds for the claim.
  todevice N        one sendToDevice to N devices (one user each); seconds for the PUT and
                    until the last device has it through /sync.
Prints one JSON line. Registration uses m.login.dummy; rate limits must be off.
"""
import concurrent.futures as cf
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

RUN = uuid.uuid4().hex[:6]


def call(base, method, path, token=None, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ok(result, what):
    status, body = result
    if status != 200:
        raise SystemExit(f"{what}: {status} {body}")
    return body


def q(s):
    return urllib.parse.quote(s, safe="")


def register(base, name):
    body = {"username": name, "password": "bench-pass-1", "auth": {"type": "m.login.dummy"}}
    r = ok(call(base, "POST", "/_matrix/client/v3/register", body=body), f"register {name}")
    return r["user_id"], r["access_token"], r["device_id"]


def register_many(base, prefix, n, workers=4):
    with cf.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: register(base, f"{prefix}{i}"), range(n)))


def send_burst(base, room, senders, messages):
    per = messages // len(senders)

    def one(i):
        _, token, _ = senders[i]
        for k in range(per):
            ok(call(base, "PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/{RUN}{uuid.uuid4().hex}",
                    token, {"msgtype": "m.text", "body": f"message {k} mentioning nobody"}), "send")
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(len(senders)) as pool:
        list(pool.map(one, range(len(senders))))
    return per * len(senders) / (time.perf_counter() - t0)


def bench_push(base, n, messages):
    senders = register_many(base, f"pb{RUN}s", 8)
    members = register_many(base, f"pb{RUN}m", n)
    rooms = []
    for label, joiners in (("members", members), ("empty", [])):
        room = ok(call(base, "POST", "/_matrix/client/v3/createRoom", senders[0][1],
                       {"preset": "public_chat"}), "createRoom")["room_id"]
        for _, token, _ in senders[1:] + joiners:
            ok(call(base, "POST", f"/_matrix/client/v3/join/{q(room)}", token, {}), "join")
        rooms.append((label, room))
    out = {"scenario": "push", "members": n, "messages": messages}
    for label, room in rooms:
        out[f"msgs_per_s_{label}"] = round(send_burst(base, room, senders, messages), 1)
    return out


def bench_claim(base, n):
    devices = register_many(base, f"cb{RUN}d", n)

    def upload(d):
        user, token, device = d
        keys = {f"signed_curve25519:K{i}": {"key": uuid.uuid4().hex, "signatures": {user: {f"ed25519:{device}": "sig"}}}
                for i in range(5)}
        ok(call(base, "POST", "/_matrix/client/v3/keys/upload", token, {"one_time_keys": keys}), "upload")
    with cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(upload, devices))
    claimer = register(base, f"cb{RUN}claimer")
    body = {"one_time_keys": {}}
    for user, _, device in devices:
        body["one_time_keys"].setdefault(user, {})[device] = "signed_curve25519"
    t0 = time.perf_counter()
    r = ok(call(base, "POST", "/_matrix/client/v3/keys/claim", claimer[1], body), "claim")
    elapsed = time.perf_counter() - t0
    got = sum(len(v) for v in r.get("one_time_keys", {}).values())
    return {"scenario": "claim", "devices": n, "claimed": got, "seconds": round(elapsed, 3)}


def bench_todevice(base, n):
    devices = register_many(base, f"tb{RUN}d", n)
    since = {}

    def first_sync(d):
        r = ok(call(base, "GET", "/_matrix/client/v3/sync?timeout=0", d[1]), "sync")
        return r["next_batch"]
    with cf.ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(first_sync, devices))
    since = dict(zip([d[1] for d in devices], tokens))
    sender = register(base, f"tb{RUN}sender")
    body = {"messages": {}}
    for user, _, device in devices:
        body["messages"].setdefault(user, {})[device] = {"body": "hello", "n": RUN}
    t0 = time.perf_counter()
    ok(call(base, "PUT", f"/_matrix/client/v3/sendToDevice/m.bench/{RUN}", sender[1], body), "sendToDevice")
    put_s = time.perf_counter() - t0

    def receive(d):
        token = d[1]
        while True:
            r = ok(call(base, "GET", f"/_matrix/client/v3/sync?timeout=10000&since={q(since[token])}", token), "sync")
            since[token] = r["next_batch"]
            if any(e.get("type") == "m.bench" for e in r.get("to_device", {}).get("events", [])):
                return time.perf_counter() - t0
    with cf.ThreadPoolExecutor(16) as pool:
        times = list(pool.map(receive, devices))
    return {"scenario": "todevice", "devices": n, "put_s": round(put_s, 3),
            "last_delivered_s": round(max(times), 3)}


def main():
    kind, base = sys.argv[1], sys.argv[2]
    args = [int(a) for a in sys.argv[3:]]
    result = {"push": bench_push, "claim": bench_claim, "todevice": bench_todevice}[kind](base, *args)
    result["server"] = base
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
