#!/usr/bin/env python3
"""Federation benchmarks through the client APIs of two homeservers on loopback.

  join:  a room with N members lives on HOME; a user of GUEST joins it. Measured: the
         POST /join on GUEST (make_join, send_join with the room's state and auth chain,
         checking every event's signatures, storing the state), until the user is in.
  send:  a room shared by both servers; S users of HOME send M messages in all as fast as
         HOME takes them; measured: how fast GUEST accepts them through PUT /send (from
         the first send until GUEST's /sync has delivered the last one).

Usage: federation.py join HOME_URL GUEST_URL N        (prints one JSON line)
       federation.py send HOME_URL GUEST_URL MESSAGES
Users are registered with the m.login.dummy flow; rate limits must be off on both.
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


def register(base, name):
    body = {"username": name, "password": "bench-pass-1", "auth": {"type": "m.login.dummy"}}
    r = ok(call(base, "POST", "/_matrix/client/v3/register", body=body), f"register {name}")
    return r["user_id"], r["access_token"]


def q(s):
    return urllib.parse.quote(s, safe="")


def fill_room(base, token, room, n, workers=4):
    """N users of `base` join `room`."""
    def one(i):
        _, t = register(base, f"fb{RUN}m{i}")
        ok(call(base, "POST", f"/_matrix/client/v3/join/{q(room)}", t, {}), "join")
    with cf.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))


def server_name(user_id):
    return user_id.split(":", 1)[1]


def bench_join(home, guest, n):
    owner, owner_token = register(home, f"fb{RUN}owner")
    room = ok(call(home, "POST", "/_matrix/client/v3/createRoom", owner_token,
                   {"preset": "public_chat"}), "createRoom")["room_id"]
    started = time.time()
    fill_room(home, owner_token, room, n - 1)
    setup_s = time.time() - started
    joiner, joiner_token = register(guest, f"fb{RUN}joiner")
    t0 = time.perf_counter()
    ok(call(guest, "POST", f"/_matrix/client/v3/join/{q(room)}?via={q(server_name(owner))}",
            joiner_token, {}), "remote join")
    join_s = time.perf_counter() - t0
    members = ok(call(guest, "GET", f"/_matrix/client/v3/rooms/{q(room)}/joined_members",
                      joiner_token), "joined_members")["joined"]
    return {"scenario": "join", "members": n, "join_s": round(join_s, 3),
            "members_seen_by_guest": len(members), "setup_s": round(setup_s, 1)}


def count_messages(base, token, room):
    count, frm = 0, ""
    while True:
        page = ok(call(base, "GET", f"/_matrix/client/v3/rooms/{q(room)}/messages?dir=b&limit=1000{frm}",
                       token), "messages")
        count += sum(1 for e in page["chunk"] if e.get("type") == "m.room.message")
        if not page.get("end") or not page["chunk"]:
            return count
        frm = "&from=" + q(page["end"])


def bench_send(home, guest, messages, senders=8):
    owner, owner_token = register(home, f"fb{RUN}owner")
    room = ok(call(home, "POST", "/_matrix/client/v3/createRoom", owner_token,
                   {"preset": "public_chat"}), "createRoom")["room_id"]
    users = [register(home, f"fb{RUN}s{i}") for i in range(senders)]
    for _, t in users:
        ok(call(home, "POST", f"/_matrix/client/v3/join/{q(room)}", t, {}), "join")
    reader, reader_token = register(guest, f"fb{RUN}reader")
    ok(call(guest, "POST", f"/_matrix/client/v3/join/{q(room)}?via={q(server_name(owner))}",
            reader_token, {}), "remote join")
    # Let the senders' joins reach the guest before the clock starts.
    time.sleep(1)

    per_sender = messages // senders
    t0 = time.perf_counter()

    def send_all(i):
        _, t = users[i]
        for k in range(per_sender):
            ok(call(home, "PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/{RUN}-{i}-{k}",
                    t, {"msgtype": "m.text", "body": f"{i}-{k}"}), "send")

    with cf.ThreadPoolExecutor(senders) as pool:
        list(pool.map(send_all, range(senders)))
    sent_s = time.perf_counter() - t0
    # The home server sends a room's events to a peer in order: once the guest has a
    # marker sent after all the others, it has accepted every one of them.
    marker = ok(call(home, "PUT", f"/_matrix/client/v3/rooms/{q(room)}/send/m.room.message/{RUN}-marker",
                     owner_token, {"msgtype": "m.text", "body": "marker"}), "marker")["event_id"]
    total = per_sender * senders
    deadline = time.time() + 600
    while time.time() < deadline:
        status, _ = call(guest, "GET", f"/_matrix/client/v3/rooms/{q(room)}/event/{q(marker)}", reader_token)
        if status == 200:
            break
        time.sleep(0.02)
    else:
        raise SystemExit("the guest never received the marker")
    elapsed = time.perf_counter() - t0
    received = count_messages(guest, reader_token, room)
    return {"scenario": "send", "messages": total + 1, "received": received,
            "home_send_s": round(sent_s, 2), "seconds": round(elapsed, 2),
            "events_per_s": round((total + 1) / elapsed, 1)}


def main():
    kind, home, guest, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    result = bench_join(home, guest, n) if kind == "join" else bench_send(home, guest, n)
    result.update({"home": home, "guest": guest})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
