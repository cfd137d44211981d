#!/usr/bin/env python3
"""Smoke test: a real Matrix client (matrix-nio) drives a running homeserver.

Usage: nio_smoke.py [HOMESERVER_URL]   (or HOMESERVER_URL in the environment)
       NIO_SMOKE_REGISTRATION_TOKEN=... nio_smoke.py URL   (token registration instead)

Two users register (nio's own m.login.dummy registration, or with a registration
token), log in with their passwords
on fresh clients, and then only talk through nio: A creates a room and invites B; B's
own `sync_forever` loop sees the invite and joins; A's messages reach B through B's sync
loop and B's reply reaches A through A's; B pages back through the whole history with
`room_messages`. Any failure exits non-zero with a message; the whole run is bounded
by NIO_SMOKE_TIMEOUT seconds (default 60).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from typing import Awaitable, Callable

import aiohttp
from nio.responses import RegisterInteractiveResponse
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    LoginResponse,
    MatrixRoom,
    MessageDirection,
    RegisterResponse,
    RoomCreateEvent,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncError,
    SyncResponse,
)

SYNC_TIMEOUT_MS = 10_000
HISTORY_MESSAGES = 25


class SmokeFailure(Exception):
    pass


class NioComplaints(logging.Handler):
    """Collects what nio logs at WARNING and above: schema validation failures of our
    responses and events, retries, HTTP errors. Any of them fails the test."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = f"{record.name}: {record.getMessage()}"
        self.records.append(message)
        print(f"[nio-smoke] nio {record.levelname}: {message}", file=sys.stderr, flush=True)


complaints = NioComplaints()


def step(msg: str) -> None:
    print(f"[nio-smoke {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def expect(response, kind, what: str):
    """Returns `response` if it is a `kind`, else fails with the server's answer."""
    if not isinstance(response, kind):
        raise SmokeFailure(f"{what} failed: {type(response).__name__}: {response}")
    return response


def new_client(url: str, user: str = "") -> AsyncClient:
    # No automatic retries: a server error must fail the test, not be papered over.
    config = AsyncClientConfig(max_timeouts=2, max_limit_exceeded=0, request_timeout=30)
    return AsyncClient(url, user, config=config)


async def wait_for(
    what: str, condition: Callable[[], bool], failed: Callable[[], str | None], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        error = failed()
        if error:
            raise SmokeFailure(f"while waiting for {what}: {error}")
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


class Syncer:
    """Runs a client's `sync_forever` loop and records what it delivers."""

    def __init__(self, name: str, client: AsyncClient):
        self.name = name
        self.client = client
        self.messages: dict[str, list[tuple[str, str]]] = {}  # room -> [(sender, body)]
        self.members: dict[str, dict[str, str]] = {}  # room -> user -> membership
        self.invites: list[str] = []
        self.sync_errors: list[str] = []
        self.syncs = 0
        self.task: asyncio.Task | None = None
        client.add_event_callback(self._on_message, RoomMessageText)
        client.add_event_callback(self._on_member, RoomMemberEvent)
        client.add_event_callback(self._on_invite, InviteMemberEvent)
        client.add_response_callback(self._on_sync, SyncResponse)
        client.add_response_callback(self._on_sync_error, SyncError)

    async def _on_message(self, room: MatrixRoom, event: RoomMessageText) -> None:
        self.messages.setdefault(room.room_id, []).append((event.sender, event.body))

    async def _on_member(self, room: MatrixRoom, event: RoomMemberEvent) -> None:
        self.members.setdefault(room.room_id, {})[event.state_key] = event.membership

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if event.state_key == self.client.user_id and event.membership == "invite":
            if room.room_id not in self.invites:
                self.invites.append(room.room_id)

    async def _on_sync(self, response: SyncResponse) -> None:
        self.syncs += 1

    async def _on_sync_error(self, response: SyncError) -> None:
        self.sync_errors.append(f"{response.status_code}: {response.message}")

    def start(self) -> None:
        self.task = asyncio.create_task(
            self.client.sync_forever(timeout=SYNC_TIMEOUT_MS, full_state=True),
            name=f"sync-{self.name}",
        )

    def failure(self) -> str | None:
        if self.sync_errors:
            return f"{self.name}'s sync failed: {self.sync_errors[0]}"
        if self.task and self.task.done():
            if self.task.cancelled():
                return f"{self.name}'s sync loop was cancelled"
            exc = self.task.exception()
            return f"{self.name}'s sync loop stopped: {exc!r}"
        return None

    def bodies(self, room_id: str) -> list[str]:
        return [body for _, body in self.messages.get(room_id, [])]

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


async def register_with_token(
    registrar: AsyncClient, url: str, localpart: str, password: str, token: str
) -> str:
    """Token registration as the spec has it: a first request for the session and the
    flows, then the registration_token stage.

    nio's own `register_with_token` cannot be used to the end: it assumes Synapse's flow
    [m.login.registration_token, m.login.dummy] and reads the 200 that completes a
    single-stage token flow as an error. Its opening request (an `auth` object without
    `type` or `session`) is sent through nio here, the token stage with aiohttp."""
    challenge = await registrar.register_interactive(
        localpart, password, {"initial_device_display_name": "nio-smoke-register"}
    )
    challenge = expect(challenge, RegisterInteractiveResponse, f"opening registration of {localpart}")
    if challenge.stages != ["m.login.registration_token"] or not challenge.session:
        raise SmokeFailure(f"unexpected registration challenge: {challenge}")
    body = {
        "username": localpart,
        "password": password,
        "initial_device_display_name": "nio-smoke-register",
        "auth": {
            "type": "m.login.registration_token",
            "token": token,
            "session": challenge.session,
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/_matrix/client/v3/register", json=body) as response:
            answer = await response.json()
            if response.status != 200 or "user_id" not in answer:
                raise SmokeFailure(f"token stage of {localpart}: {response.status} {answer}")
    step(f"registered {answer['user_id']} with the registration token")
    return answer["user_id"]


async def register_and_login(url: str, localpart: str, password: str) -> AsyncClient:
    registrar = new_client(url)
    token = os.environ.get("NIO_SMOKE_REGISTRATION_TOKEN")
    try:
        if token:
            user_id = await register_with_token(registrar, url, localpart, password, token)
        else:
            reg = expect(
                await registrar.register(localpart, password, device_name="nio-smoke-register"),
                RegisterResponse,
                f"registration of {localpart}",
            )
            step(f"registered {reg.user_id} through the dummy flow (device {reg.device_id})")
            user_id = reg.user_id
    finally:
        await registrar.close()

    client = new_client(url, user_id)
    login = expect(
        await client.login(password=password, device_name="nio-smoke"),
        LoginResponse,
        f"password login of {user_id}",
    )
    if login.user_id != user_id:
        raise SmokeFailure(f"login returned {login.user_id}, expected {user_id}")
    step(f"logged in {user_id} (device {login.device_id})")
    return client


async def run(url: str, timeout: float) -> None:
    suffix = secrets.token_hex(4)
    a = await register_and_login(url, f"nio_a_{suffix}", secrets.token_urlsafe(12))
    b = await register_and_login(url, f"nio_b_{suffix}", secrets.token_urlsafe(12))
    sa, sb = Syncer("A", a), Syncer("B", b)
    def failed() -> str | None:
        if complaints.records:
            return f"nio complained: {complaints.records[0]}"
        return sa.failure() or sb.failure()

    wait = lambda what, cond, t=timeout: wait_for(what, cond, failed, t)  # noqa: E731
    try:
        sa.start()
        sb.start()
        await wait("both initial syncs", lambda: sa.syncs > 0 and sb.syncs > 0)

        created = expect(
            await a.room_create(name="nio smoke", topic="created by nio_smoke.py"),
            RoomCreateResponse,
            "room creation",
        )
        room_id = created.room_id
        step(f"A created {room_id}")
        await wait("A's sync to deliver the new room", lambda: room_id in a.rooms)
        if a.rooms[room_id].name != "nio smoke":
            raise SmokeFailure(f"A sees room name {a.rooms[room_id].name!r}")

        expect(await a.room_invite(room_id, b.user_id), RoomInviteResponse, "invite")
        step(f"A invited {b.user_id}")

        await wait("B's sync loop to see the invite", lambda: room_id in sb.invites)
        invited = b.invited_rooms.get(room_id)
        if invited is None:
            raise SmokeFailure("nio did not record the invited room")
        step(f"B sees the invite (room name in invite state: {invited.name!r})")
        if invited.name != "nio smoke":
            raise SmokeFailure(f"invite state has room name {invited.name!r}")

        expect(await b.join(room_id), JoinResponse, "B's join")
        await wait(
            "B's sync to deliver the joined room",
            lambda: room_id in b.rooms and room_id not in b.invited_rooms,
        )
        await wait(
            "A's sync to show B joined",
            lambda: sa.members.get(room_id, {}).get(b.user_id) == "join",
        )
        step("B joined; both sync loops agree")

        live = [f"hello B #{i} ({suffix})" for i in range(3)]
        for body in live:
            expect(
                await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}),
                RoomSendResponse,
                f"A sending {body!r}",
            )
        await wait(
            "B's sync loop to receive A's messages",
            lambda: all(m in sb.bodies(room_id) for m in live),
        )
        got = [m for m in sb.bodies(room_id) if m in live]
        if got != live:
            raise SmokeFailure(f"B received A's messages as {got}, expected {live}")
        senders = {s for s, body in sb.messages[room_id] if body in live}
        if senders != {a.user_id}:
            raise SmokeFailure(f"B saw A's messages from {senders}")
        step(f"B received {len(live)} messages from A through sync")

        reply = f"hello A ({suffix})"
        expect(
            await b.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": reply}),
            RoomSendResponse,
            "B's reply",
        )
        await wait("A's sync loop to receive B's reply", lambda: reply in sa.bodies(room_id))
        if (b.user_id, reply) not in sa.messages[room_id]:
            raise SmokeFailure("A received B's reply with the wrong sender")
        step("A received B's reply through sync")

        history = [f"history {i} ({suffix})" for i in range(HISTORY_MESSAGES)]
        for body in history:
            expect(
                await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body}),
                RoomSendResponse,
                f"A sending {body!r}",
            )
        await wait(
            "B's sync loop to catch up with the history messages",
            lambda: history[-1] in sb.bodies(room_id),
        )

        # Page backwards from B's current position to the room's creation.
        expected = live + [reply] + history
        start = b.next_batch
        seen: list[str] = []
        reached_create = False
        pages = 0
        while True:
            page = expect(
                await b.room_messages(room_id, start=start, direction=MessageDirection.back, limit=10),
                RoomMessagesResponse,
                f"room_messages page {pages + 1}",
            )
            pages += 1
            for event in page.chunk:
                if isinstance(event, RoomMessageText):
                    seen.append(event.body)
                if isinstance(event, RoomCreateEvent):
                    reached_create = True
            if not page.chunk or not page.end or page.end == start:
                break
            if pages > 50:
                raise SmokeFailure("room_messages did not end after 50 pages")
            start = page.end
        seen.reverse()
        if seen != expected:
            raise SmokeFailure(
                f"history through room_messages is {seen}, expected {expected}"
            )
        if not reached_create:
            raise SmokeFailure("paging back through history never reached m.room.create")
        step(f"B paged back through {len(seen)} messages in {pages} pages to the room's creation")
        if complaints.records:
            raise SmokeFailure(f"nio complained: {complaints.records}")
    finally:
        await sa.stop()
        await sb.stop()
        for client in (a, b):
            try:
                await client.logout()
            except Exception:
                pass
            await client.close()


def main() -> int:
    url = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HOMESERVER_URL", "")).rstrip("/")
    if not url:
        print("usage: nio_smoke.py HOMESERVER_URL (or set HOMESERVER_URL)", file=sys.stderr)
        return 2
    timeout = float(os.environ.get("NIO_SMOKE_TIMEOUT", "60"))
    logging.getLogger("nio").addHandler(complaints)
    logging.getLogger("nio").setLevel(logging.WARNING)
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(run(url, timeout), timeout))
    except SmokeFailure as e:
        print(f"nio-smoke FAILED: {e}", file=sys.stderr)
        return 1
    except (asyncio.TimeoutError, TimeoutError):
        print(f"nio-smoke FAILED: did not finish within {timeout:.0f}s", file=sys.stderr)
        return 1
    except Exception as e:  # a crash in nio or in this script
        import traceback

        traceback.print_exc()
        print(f"nio-smoke FAILED: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"nio-smoke PASSED in {time.monotonic() - started:.1f}s against {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
