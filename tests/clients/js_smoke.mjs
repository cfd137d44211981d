// Smoke test: matrix-js-sdk (the SDK under Element Web) drives a running homeserver.
//
// Usage: node js_smoke.mjs HOMESERVER_URL   (NODE_PATH or a node_modules with matrix-js-sdk)
//
// The same story as nio_smoke.py, through the SDK's own machinery: registration (UIA dummy
// flow), password login, startClient() sync loops, invite seen through B's sync and
// joined, messages both ways through the live timelines, and B scrolling back through the
// history with paginateEventTimeline until the room's creation. Bounded by
// JS_SMOKE_TIMEOUT seconds (default 60); any failure exits 1 with a message.

// The SDK logs every request at debug level, looking up the console method at each call.
// Silence debug/info/log; print warnings and errors for whoever reads the output, but
// do not fail on them: the SDK logs ordinary things at those levels (that it adds push
// rules of its own to the server's defaults; "[MatrixRTCSessionManager] Got room state
// event for unknown room" for every room it creates). Failures are what the SDK does:
// sync errors and the assertions below. This script's own output goes straight to
// stdout/stderr.
const complaints = [];
const out = (line) => process.stdout.write(line + "\n");
const err = (line) => process.stderr.write(line + "\n");
const describe = (a) =>
    a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : JSON.stringify(a);
for (const method of ["debug", "info", "log", "trace"]) console[method] = () => {};
for (const method of ["warn", "error"]) {
    console[method] = (...args) => {
        const text = args.map(describe).join(" ");
        // The SDK adds rules of unstable MSCs (e.g. .org.matrix.msc3914.*) to any ruleset
        // that lacks them: its own extension, not a fault in the server's answer.
        if (/^Adding default global \w+ push rule \.org\.matrix\.msc\d+\./.test(text)) return;
        complaints.push(`${method}: ${text}`);
        err(`[js-smoke] matrix-js-sdk ${method}: ${text}`);
    };
}
const sdk = await import("matrix-js-sdk");

const url = (process.argv[2] || process.env.HOMESERVER_URL || "").replace(/\/$/, "");
if (!url) {
    err("usage: node js_smoke.mjs HOMESERVER_URL");
    process.exit(2);
}
const timeoutS = Number(process.env.JS_SMOKE_TIMEOUT || 60);
const started = Date.now();
const suffix = Math.random().toString(16).slice(2, 10);

class SmokeFailure extends Error {}

const step = (msg) => out(`[js-smoke ${new Date().toISOString().slice(11, 19)}] ${msg}`);

async function waitFor(what, condition, failed, seconds = timeoutS) {
    const deadline = Date.now() + seconds * 1000;
    while (!condition()) {
        const error = failed();
        if (error) throw new SmokeFailure(`while waiting for ${what}: ${error}`);
        if (Date.now() > deadline) throw new SmokeFailure(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

async function registerAndLogin(localpart, password) {
    const anon = sdk.createClient({ baseUrl: url });
    let response;
    try {
        response = await anon.registerRequest({ username: localpart, password });
    } catch (e) {
        const session = e?.data?.session;
        if (e?.httpStatus !== 401 || !session) {
            throw new SmokeFailure(`registration of ${localpart}: expected a 401 UIA challenge, got ${e}`);
        }
        const flows = (e.data.flows || []).map((f) => f.stages.join(","));
        if (!flows.includes("m.login.dummy")) {
            throw new SmokeFailure(`no m.login.dummy flow offered: ${JSON.stringify(e.data)}`);
        }
        response = await anon.registerRequest({
            username: localpart,
            password,
            auth: { type: "m.login.dummy", session },
        });
    }
    if (!response?.user_id || !response?.access_token) {
        throw new SmokeFailure(`registration of ${localpart} returned ${JSON.stringify(response)}`);
    }
    step(`registered ${response.user_id}`);
    const login = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password,
        initial_device_display_name: "js-smoke",
    });
    if (login.user_id !== response.user_id) {
        throw new SmokeFailure(`login returned ${login.user_id}, expected ${response.user_id}`);
    }
    step(`logged in ${login.user_id} (device ${login.device_id})`);
    anon.stopClient();
    return sdk.createClient({
        baseUrl: url,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
        timelineSupport: true,
    });
}

class Watcher {
    constructor(name, client) {
        this.name = name;
        this.client = client;
        this.messages = new Map(); // room -> [{sender, body}]
        this.invites = [];
        this.syncState = null;
        this.syncError = null;
        client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
            this.syncState = state;
            if (state === "ERROR") this.syncError = String(data?.error ?? "sync error");
        });
        client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
            if (toStartOfTimeline || !room || event.getType() !== "m.room.message") return;
            if (event.status !== null && event.status !== undefined) return; // local echo
            const list = this.messages.get(room.roomId) ?? [];
            list.push({ sender: event.getSender(), body: event.getContent().body });
            this.messages.set(room.roomId, list);
        });
        client.on(sdk.RoomMemberEvent.Membership, (_event, member) => {
            if (member.userId === client.getUserId() && member.membership === "invite") {
                if (!this.invites.includes(member.roomId)) this.invites.push(member.roomId);
            }
        });
    }
    bodies(roomId) {
        return (this.messages.get(roomId) ?? []).map((m) => m.body);
    }
    failure() {
        return this.syncError ? `${this.name}'s sync failed: ${this.syncError}` : null;
    }
}

async function run() {
    const a = await registerAndLogin(`js_a_${suffix}`, `pw-a-${suffix}-secret`);
    const b = await registerAndLogin(`js_b_${suffix}`, `pw-b-${suffix}-secret`);
    const wa = new Watcher("A", a);
    const wb = new Watcher("B", b);
    const failed = () => wa.failure() || wb.failure();
    const wait = (what, cond) => waitFor(what, cond, failed);
    try {
        await a.startClient({ initialSyncLimit: 20 });
        await b.startClient({ initialSyncLimit: 20 });
        await wait("both clients to finish their first sync", () => wa.syncState === "SYNCING" && wb.syncState === "SYNCING");
        step("both clients are syncing");

        const { room_id: roomId } = await a.createRoom({ name: "js smoke", visibility: sdk.Visibility.Private });
        step(`A created ${roomId}`);
        await wait("A's sync to deliver the room", () => a.getRoom(roomId)?.name === "js smoke");
        await a.invite(roomId, b.getUserId());
        step(`A invited ${b.getUserId()}`);

        await wait("B's sync to see the invite", () => wb.invites.includes(roomId));
        const invited = b.getRoom(roomId);
        if (invited?.getMyMembership() !== "invite") throw new SmokeFailure(`B's membership is ${invited?.getMyMembership()}`);
        if (invited.name !== "js smoke") throw new SmokeFailure(`invite shows room name ${invited.name}`);
        step(`B sees the invite (room name ${JSON.stringify(invited.name)})`);
        await b.joinRoom(roomId);
        await wait("B's sync to show B joined", () => b.getRoom(roomId)?.getMyMembership() === "join");
        await wait("A's sync to show B joined", () => a.getRoom(roomId)?.getMember(b.getUserId())?.membership === "join");
        step("B joined; both clients agree");

        const live = [0, 1, 2].map((i) => `hello B #${i} (${suffix})`);
        for (const body of live) await a.sendMessage(roomId, { msgtype: "m.text", body });
        await wait("B's timeline to receive A's messages", () => live.every((m) => wb.bodies(roomId).includes(m)));
        const got = wb.bodies(roomId).filter((m) => live.includes(m));
        if (JSON.stringify(got) !== JSON.stringify(live)) throw new SmokeFailure(`B got ${got}`);
        step("B received A's messages through sync");

        const reply = `hello A (${suffix})`;
        await b.sendMessage(roomId, { msgtype: "m.text", body: reply });
        await wait("A's timeline to receive B's reply", () => wa.bodies(roomId).includes(reply));
        const replySender = wa.messages.get(roomId).find((m) => m.body === reply).sender;
        if (replySender !== b.getUserId()) throw new SmokeFailure(`reply came from ${replySender}`);
        step("A received B's reply through sync");

        const history = Array.from({ length: 25 }, (_, i) => `history ${i} (${suffix})`);
        for (const body of history) await a.sendMessage(roomId, { msgtype: "m.text", body });
        await wait("B to catch up", () => wb.bodies(roomId).includes(history.at(-1)));

        // A fresh client for B, so its timeline starts at the end and has to scroll back.
        const b2 = sdk.createClient({
            baseUrl: url,
            userId: b.getUserId(),
            deviceId: b.getDeviceId(),
            accessToken: b.getAccessToken(),
            timelineSupport: true,
        });
        const w2 = new Watcher("B2", b2);
        await b2.startClient({ initialSyncLimit: 5 });
        await waitFor("B2's first sync", () => w2.syncState === "SYNCING" && b2.getRoom(roomId), () => w2.failure());
        const room = b2.getRoom(roomId);
        const timeline = room.getLiveTimeline();
        let pages = 0;
        while (await b2.paginateEventTimeline(timeline, { backwards: true, limit: 10 })) {
            if (++pages > 50) throw new SmokeFailure("scrollback did not end after 50 pages");
        }
        const events = timeline.getEvents();
        const seen = events.filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);
        const expected = [...live, reply, ...history];
        if (JSON.stringify(seen) !== JSON.stringify(expected)) {
            throw new SmokeFailure(`history is ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
        }
        if (events[0]?.getType() !== "m.room.create") {
            throw new SmokeFailure(`scrollback starts at ${events[0]?.getType()}, not m.room.create`);
        }
        step(`B scrolled back through ${seen.length} messages in ${pages + 1} pages to m.room.create`);
        b2.stopClient();
        if (complaints.length) step(`matrix-js-sdk logged ${complaints.length} warnings/errors (above)`);
    } finally {
        a.stopClient();
        b.stopClient();
    }
}

const timer = setTimeout(() => {
    err(`js-smoke FAILED: did not finish within ${timeoutS}s`);
    process.exit(1);
}, timeoutS * 1000);

try {
    await run();
    clearTimeout(timer);
    out(`js-smoke PASSED in ${((Date.now() - started) / 1000).toFixed(1)}s against ${url}`);
    process.exit(0);
} catch (e) {
    clearTimeout(timer);
    if (!(e instanceof SmokeFailure)) err(e?.stack ?? String(e));
    err(`js-smoke FAILED: ${e.message ?? e}`);
    process.exit(1);
}
