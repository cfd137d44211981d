#!/usr/bin/env python3
"""Users on conduit and on Synapse chat across the federation, through the client APIs only.

Usage: synapse.py CONDUIT_URL SYNAPSE_URL   (run by tests/interop/run-synapse.sh)

Each step prints one line; the first failure stops the run with a non-zero exit.
"""
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

CONDUIT, SYNAPSE = sys.argv[1], sys.argv[2]
TIMEOUT = 30


def call(base, method, path, token=None, body=None, ok=(200,)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    value = json.loads(text) if text else {}
    if status not in ok:
        raise AssertionError(f"{method} {base}{path} -> {status} {value}")
    return value


class User:
    def __init__(self, base, name):
        self.base = base
        body = {"username": name, "password": "interop-pass-1", "auth": {"type": "m.login.dummy"},
                "inhibit_login": False}
        r = call(base, "POST", "/_matrix/client/v3/register", body=body)
        self.user_id, self.token = r["user_id"], r["access_token"]
        self.since = None
        self.timeline = {}

    def req(self, method, path, body=None, ok=(200,)):
        return call(self.base, method, path, self.token, body, ok)

    def sync(self, timeout_ms=2000):
        q = f"?timeout={timeout_ms}" + (f"&since={urllib.parse.quote(self.since)}" if self.since else "")
        r = self.req("GET", "/_matrix/client/v3/sync" + q)
        self.since = r["next_batch"]
        for room_id, room in r.get("rooms", {}).get("join", {}).items():
            self.timeline.setdefault(room_id, []).extend(room.get("timeline", {}).get("events", []))
        return r

    def wait_for(self, what, predicate):
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            r = self.sync()
            found = predicate(r)
            if found:
                return found
        raise AssertionError(f"{self.user_id}: timed out waiting for {what}")

    def wait_invite(self, room_id):
        return self.wait_for(f"invite to {room_id}",
                             lambda r: room_id in r.get("rooms", {}).get("invite", {}))

    def wait_event(self, room_id, predicate, what):
        def check(_):
            for event in self.timeline.get(room_id, []):
                if predicate(event):
                    return event
            return None
        return self.wait_for(what, check)

    def send(self, room_id, body, event_type="m.room.message", content=None):
        content = content or {"msgtype": "m.text", "body": body}
        path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/{event_type}/{uuid.uuid4().hex}"
        return self.req("PUT", path, content)["event_id"]

    def join(self, room, via=None):
        q = "" if not via else "?" + "&".join("via=" + urllib.parse.quote(v) for v in via)
        return self.req("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}{q}", {})["room_id"]

    def members(self, room_id):
        r = self.req("GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/joined_members")
        return set(r["joined"].keys())


def step(name):
    print(f"ok: {name}", flush=True)


def has_body(body):
    return lambda e: e.get("type") == "m.room.message" and e.get("content", {}).get("body") == body


def main():
    suffix = uuid.uuid4().hex[:6]
    alice = User(CONDUIT, "alice" + suffix)      # on conduit
    bob = User(SYNAPSE, "bob" + suffix)          # on Synapse
    for u in (alice, bob):
        u.sync(0)
    step(f"registered {alice.user_id} and {bob.user_id}")

    # 1. A public room on conduit; bob joins by its alias through Synapse.
    alias_local = "interop" + suffix
    room = alice.req("POST", "/_matrix/client/v3/createRoom",
                     {"preset": "public_chat", "room_alias_name": alias_local, "name": "conduit room"})["room_id"]
    alias = f"#{alias_local}:{alice.user_id.split(':', 1)[1]}"
    joined = bob.join(alias)
    assert joined == room, (joined, room)
    step("synapse user joined a conduit room by alias")
    alice.wait_for("bob's join", lambda r: bob.user_id in alice.members(room))
    step("conduit sees the synapse user joined")

    alice.send(room, "hello from conduit")
    bob.wait_event(room, has_body("hello from conduit"), "conduit's message on synapse")
    step("message conduit -> synapse")
    bob.send(room, "hello from synapse")
    alice.wait_event(room, has_body("hello from synapse"), "synapse's message on conduit")
    step("message synapse -> conduit")

    # 2. A private room on Synapse; bob invites alice, who joins over federation.
    room2 = bob.req("POST", "/_matrix/client/v3/createRoom",
                    {"preset": "private_chat", "invite": [alice.user_id], "name": "synapse room"})["room_id"]
    for i in range(3):
        bob.send(room2, f"synapse history {i}")
    alice.wait_invite(room2)
    step("conduit user got the invite from synapse")
    alice.join(room2)
    # History from before the join comes from Synapse through /backfill.
    page = alice.req("GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room2)}/messages?dir=b&limit=50")
    bodies = [e.get("content", {}).get("body") for e in page["chunk"]]
    assert "synapse history 0" in bodies, bodies
    assert page["chunk"][-1]["type"] == "m.room.create", page["chunk"][-1]
    step("the conduit user pages back through history from before the join (backfill)")
    bob.wait_for("alice's join", lambda r: alice.user_id in bob.members(room2))
    step("conduit user joined the synapse room")
    bob.send(room2, "private hello from synapse")
    alice.wait_event(room2, has_body("private hello from synapse"), "message in the synapse room")
    alice.send(room2, "private reply from conduit")
    bob.wait_event(room2, has_body("private reply from conduit"), "reply in the synapse room")
    step("messages both ways in the synapse room")

    # A second user of ours invited into a room our server is already in.
    carol = User(CONDUIT, "carol" + suffix)
    bob.req("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room2)}/invite", {"user_id": carol.user_id})
    carol.wait_invite(room2)
    carol.join(room2)
    bob.wait_for("carol's join", lambda r: carol.user_id in bob.members(room2))
    step("a second conduit user invited into a room conduit is already in joins it")

    # 3. Conduit invites a synapse user into a private conduit room.
    room3 = alice.req("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat", "name": "conduit private"})["room_id"]
    alice.req("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room3)}/invite", {"user_id": bob.user_id})
    bob.wait_invite(room3)
    bob.join(room3)
    alice.wait_for("bob in the private conduit room", lambda r: bob.user_id in alice.members(room3))
    step("synapse user accepted a conduit invite")

    # 4. An encrypted room across the two servers: m.room.encryption state and ciphertext
    # events flow both ways, untouched.
    alice.req("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room3)}/state/m.room.encryption/",
              {"algorithm": "m.megolm.v1.aes-sha2"})
    bob.wait_event(room3, lambda e: e.get("type") == "m.room.encryption", "encryption state on synapse")
    cipher = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnB" + suffix,
              "device_id": "DEV", "sender_key": "c2VuZGVya2V5", "session_id": "c2Vzc2lvbg"}
    alice.send(room3, None, "m.room.encrypted", cipher)
    got = bob.wait_event(room3, lambda e: e.get("type") == "m.room.encrypted", "ciphertext on synapse")
    assert got["content"]["ciphertext"] == cipher["ciphertext"], got
    cipher2 = dict(cipher, ciphertext="AwgBEnB" + suffix)
    bob.send(room3, None, "m.room.encrypted", cipher2)
    alice.wait_event(room3, lambda e: e.get("type") == "m.room.encrypted"
                     and e["content"].get("ciphertext") == cipher2["ciphertext"], "ciphertext on conduit")
    step("encrypted room: encryption state and ciphertext both ways")

    # 5. Leaving across servers.
    bob.req("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/leave", {})
    alice.wait_for("bob's leave", lambda r: bob.user_id not in alice.members(room))
    alice.req("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room2)}/leave", {})
    bob.wait_for("alice's leave", lambda r: alice.user_id not in bob.members(room2))
    step("leaves seen on both sides")
    print("interop: all steps passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
