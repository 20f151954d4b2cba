// A fake WebSocket and a fake clock: the unit tests drive the client's state
// machine by hand, deterministically, without a network or real time.

export class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.seq = 0;
    this.timers = new Map(); // id -> {at, fn}
  }
  now() {
    return this.t;
  }
  setTimeout(fn, ms) {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn, seq: id });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  /** Advance time by ms, running due timers in order (and the promise jobs they start). */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) {
        if (tm.at <= end && (next === null || tm.at < next[1].at || (tm.at === next[1].at && tm.seq < next[1].seq))) {
          next = [id, tm];
        }
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.t).sort((a, b) => a - b);
  }
}

/** Let every pending promise job (and microtask flush) run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

export function fakeWebSocket() {
  class FakeWS {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.frames = []; // what the client sent, one string per frame
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeWS.sockets.push(this);
    }
    send(frame) {
      if (this.closedWith !== null) throw new Error("send after close");
      this.frames.push(frame);
      if (FakeWS.autoPong) {
        // a live server: answers pings, so that long fake-time spans do
        // not end in a heartbeat drop
        for (const line of frame.split("\n")) {
          const m = JSON.parse(line);
          if (m.method === "ping") queueMicrotask(() => this.onmessage({ data: JSON.stringify({ id: m.id, result: { worker: 0 } }) }));
        }
      }
    }
    close(code) {
      this.closedWith = code === undefined ? 1005 : code;
    }
    // --- the server's side
    open() {
      this.onopen({});
    }
    push(...msgs) {
      this.onmessage({ data: msgs.map((m) => (typeof m === "string" ? m : JSON.stringify(m))).join("\n") });
    }
    serverClose(code, reason = "") {
      this.onclose({ code, reason });
    }
    /** Every command sent, parsed, in order. */
    commands() {
      return this.frames.flatMap((f) => f.split("\n")).map((l) => JSON.parse(l));
    }
    last(method) {
      const c = this.commands().filter((m) => m.method === method);
      return c[c.length - 1];
    }
    reply(cmd, result) {
      this.push({ id: cmd.id, result });
    }
    error(cmd, code, message = "error") {
      this.push({ id: cmd.id, error: { code, message } });
    }
  }
  FakeWS.sockets = [];
  FakeWS.autoPong = true;
  return FakeWS;
}
