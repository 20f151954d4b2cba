// HeraldClient: one logical connection to herald (protocol herald.v1) that
// survives socket losses. See README.md for the API and the guarantees.

import { Emitter } from "./emitter.js";
import {
  PROFILES,
  RECONNECT_NOW,
  NEW_TOKEN,
  TERMINAL,
  backoffDelay,
  closeAction,
} from "./policy.js";

const SUBPROTOCOL = "herald.v1";

// herald closes a connection whose inbound message passes 64 KiB with 1009
// (terminal), so the client refuses such a command itself and keeps its
// batched frames below the limit.
const MAX_MESSAGE_BYTES = 65536;
const MAX_FRAME_BYTES = 60000;

const TUNABLES = Object.keys(PROFILES.production);

/** An error with herald's error code (a number) or a client-side code (a string). */
export class HeraldError extends Error {
  constructor(message, code, method) {
    super(message);
    this.name = "HeraldError";
    this.code = code;
    if (method !== undefined) this.method = method;
  }
}

const encoder = typeof TextEncoder === "function" ? new TextEncoder() : null;

function byteLength(s) {
  // Only measure when the string could be over the limit: at most 3 bytes
  // of UTF-8 per UTF-16 unit.
  if (s.length * 3 <= MAX_FRAME_BYTES || !encoder) return s.length;
  return encoder.encode(s).length;
}

function noop() {}

const defaultClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
};

export class Subscription extends Emitter {
  constructor(client, channel, recover) {
    super();
    this._client = client;
    this.channel = channel;
    this.recover = recover;
    /** "unsubscribed" | "subscribing" | "subscribed" */
    this.state = "unsubscribed";
    /** Offset and epoch of the last publication delivered (or of the subscribe result). */
    this.offset = undefined;
    this.epoch = undefined;
    this._failed = false;
    this._early = []; // pushes that came before the subscribe result
    this._fetching = false; // a history fetch for an offset jump is running
    this._held = []; // pushes that came during that fetch
    this._fetchSeq = 0;
    this._noHistory = false;
    this._attempt = 0;
    this._retryTimer = null;
  }

  /** Stop receiving; the Subscription is forgotten by the client. */
  unsubscribe() {
    this._client._unsubscribe(this);
  }

  _onListenerError(name, e) {
    this._client._listenerError(name, e);
  }

  _reset() {
    this._early = [];
    this._held = [];
    this._fetching = false;
    this._fetchSeq++;
    if (this._retryTimer !== null) {
      this._client._clock.clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
  }

  _bounded(list, entry) {
    if (list.length < this._client._opt.maxBufferedPublications) {
      list.push(entry);
    }
    // else dropped: a later publication shows the offset jump and the
    // missing range is fetched (or reported as a gap) then.
  }

  _onPush(entry) {
    if (this.state === "subscribing") return this._bounded(this._early, entry);
    if (this.state !== "subscribed") return;
    if (this._fetching) return this._bounded(this._held, entry);
    this._apply(entry);
  }

  _apply(entry) {
    if (entry.gap) return this._applyGap(entry.gap);
    const pub = entry.pub;
    if (this.epoch !== undefined && pub.epoch !== this.epoch) {
      // The channel's numbering restarted without a gap push telling us.
      this._gap("epoch_changed", 1, pub.offset - 1, pub.epoch);
      this.offset = pub.offset - 1;
      this.epoch = pub.epoch;
    }
    if (this.offset !== undefined && pub.offset <= this.offset) {
      this._client._stats.duplicatesDropped++;
      return;
    }
    if (this.offset !== undefined && pub.offset > this.offset + 1) {
      this._fillGap(this.offset + 1, pub.offset - 1, entry);
      return;
    }
    this._deliver(pub);
  }

  _deliver(pub) {
    this.offset = pub.offset;
    this.epoch = pub.epoch;
    this._client._stats.publicationsDelivered++;
    this._emit("publication", pub.data, {
      offset: pub.offset,
      epoch: pub.epoch,
      channel: this.channel,
    });
  }

  _gap(reason, from, to, epoch) {
    this._client._stats.gaps++;
    this._client._log("warn", "gap on", this.channel, reason, from, to);
    this._emit("gap", { reason, from, to, epoch: epoch === undefined ? this.epoch : epoch });
  }

  _applyGap(g) {
    this._gap("server", g.from, g.to, g.epoch);
    if (g.epoch !== this.epoch) {
      this.epoch = g.epoch;
      this.offset = g.to;
    } else {
      this.offset = Math.max(this.offset === undefined ? 0 : this.offset, g.to);
    }
  }

  // Publications from..to are missing inside one epoch: read them from
  // history where the namespace keeps it; otherwise (or if that fails)
  // report a gap. Pushes arriving meanwhile are held and applied after.
  _fillGap(from, to, entry) {
    const client = this._client;
    const epoch = this.epoch;
    if (this._noHistory || !client._ready) {
      this._gap("offset_jump", from, to);
      this.offset = to;
      this._apply(entry);
      return;
    }
    this._fetching = true;
    this._held = [entry];
    const seq = ++this._fetchSeq;
    const limit = Math.min(to - from + 1, client._opt.gapFetchLimit);
    const done = (pubs, failed) => {
      if (seq !== this._fetchSeq || this.state !== "subscribed") return;
      for (const p of pubs) {
        if (p.offset > this.offset && p.offset <= to) {
          if (p.offset !== this.offset + 1) break;
          this._deliver({ offset: p.offset, epoch, data: p.data });
        }
      }
      if (this.offset < to) {
        this._gap(failed ? "history_failed" : "offset_jump", this.offset + 1, to);
        this.offset = to;
      }
      this._fetching = false;
      const held = this._held;
      this._held = [];
      for (let i = 0; i < held.length; i++) {
        if (this._fetching) {
          this._held.push(...held.slice(i));
          break;
        }
        this._apply(held[i]);
      }
    };
    client
      ._internal("history", {
        channel: this.channel,
        limit,
        since: { offset: from - 1, epoch },
      })
      .then(
        (res) => done(res && Array.isArray(res.publications) ? res.publications : [], false),
        (err) => {
          if (err && err.code === 403) this._noHistory = true;
          if (err && err.code === "disconnected") return; // recovery takes over
          done([], err && err.code !== 403 && err.code !== 410);
        },
      );
  }

  _onSubscribed(res, recovering) {
    const had = this.offset !== undefined;
    if (recovering && res.recovered === true) {
      const pubs = Array.isArray(res.publications) ? res.publications : [];
      for (const p of pubs) {
        if (p.offset > this.offset) {
          this._deliver({ offset: p.offset, epoch: res.epoch, data: p.data });
        } else {
          this._client._stats.duplicatesDropped++;
        }
      }
    } else if (had) {
      // Resubscribed without recovery: say what was missed, if anything.
      const sameEpoch = res.epoch === this.epoch;
      if (!sameEpoch || res.offset > this.offset || recovering) {
        const from = sameEpoch ? this.offset + 1 : 1;
        this._gap("not_recovered", from, res.offset, res.epoch);
      }
    }
    this.offset = res.offset;
    this.epoch = res.epoch;
    this.state = "subscribed";
    this._attempt = 0;
    this._emit("subscribed", {
      offset: res.offset,
      epoch: res.epoch,
      recovered: recovering ? res.recovered === true : false,
    });
    const early = this._early;
    this._early = [];
    for (const e of early) this._onPush(e);
  }
}

export class HeraldClient extends Emitter {
  /**
   * @param {string} url   ws:// or wss:// URL of herald
   * @param {object} [options]  see README.md
   */
  constructor(url, options = {}) {
    super();
    if (typeof url !== "string" || !url) throw new TypeError("url must be a string");
    const profile = options.profile === undefined ? "production" : options.profile;
    const base = PROFILES[profile];
    if (!base) throw new TypeError(`unknown profile "${profile}"`);
    const opt = { ...base };
    for (const k of TUNABLES) {
      if (options[k] !== undefined) opt[k] = options[k];
    }
    if (opt.queueOverflow !== "drop-oldest" && opt.queueOverflow !== "reject") {
      throw new TypeError('queueOverflow must be "drop-oldest" or "reject"');
    }
    if (!(opt.minReconnectDelay >= 0 && opt.maxReconnectDelay >= opt.minReconnectDelay)) {
      throw new TypeError("need 0 <= minReconnectDelay <= maxReconnectDelay");
    }
    this.url = url;
    this.profile = profile;
    this._opt = opt;
    const WS = options.websocket || globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError("no global WebSocket: pass options.websocket (e.g. the ws package's WebSocket)");
    }
    this._WS = WS;
    this._getToken = typeof options.getToken === "function" ? options.getToken : null;
    this._token = typeof options.token === "string" ? options.token : undefined;
    this._logger = options.logger || (opt.debug ? console : null);
    this._clock = options.clock || defaultClock;
    this._random = options.random || Math.random;

    /** "disconnected" | "connecting" | "connected" | "closed" */
    this.state = "disconnected";
    /** The last connect result. */
    this.info = null;
    this._gen = 0; // bumped for every socket; stale callbacks compare it
    this._ws = null;
    this._ready = false; // connect result received on the current socket
    this._started = false; // connect() called and not disconnect()ed
    this._attempt = 0;
    this._needFreshToken = false;
    this._expiresAt = undefined;
    this._canRefresh = false;
    this._refreshing = false;
    this._nextId = 0;
    this._pending = new Map();
    this._outbox = [];
    this._flushScheduled = false;
    this._queue = [];
    this._subs = new Map();
    this._timers = { reconnect: null, connect: null, heartbeat: null, stable: null, refresh: null };
    this._lastRecv = 0;
    this._pingSentAt = null;
    this._pingInterval = opt.pingInterval;
    this._stats = {
      reconnects: 0,
      publicationsDelivered: 0,
      duplicatesDropped: 0,
      gaps: 0,
      messagesQueuedTotal: 0,
      messagesDropped: 0,
      lastRtt: null,
    };
    this._onOnline = () => {
      if (this.state === "disconnected" && this._timers.reconnect !== null) {
        this._log("info", "online: reconnecting now");
        this._clearTimer("reconnect");
        this._open();
      }
    };
  }

  // ------------------------------------------------------------------ API

  /** Start connecting (and keep reconnecting until disconnect() or a terminal close). */
  connect() {
    if (this._started && this.state !== "closed") return;
    this._started = true;
    this._attempt = 0;
    if (typeof globalThis.addEventListener === "function" && typeof globalThis.navigator === "object") {
      globalThis.addEventListener("online", this._onOnline);
    }
    for (const sub of this._subs.values()) sub._failed = false;
    this._open();
  }

  /** Close the connection and stop reconnecting. Queued commands are rejected. */
  disconnect() {
    if (!this._started) {
      this._rejectQueue("disconnected", "disconnected by the client");
      return;
    }
    this._started = false;
    this._stop();
    this._rejectQueue("disconnected", "disconnected by the client");
    this._setState("disconnected");
    this._emit("disconnected", 1000, "disconnect()", false);
  }

  /** The Subscription of channel (created and subscribed on first call). */
  subscribe(channel, options = {}) {
    if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a string");
    let sub = this._subs.get(channel);
    if (sub) {
      if (sub._failed) {
        sub._failed = false;
        this._sendSubscribe(sub);
      }
      return sub;
    }
    sub = new Subscription(this, channel, options.recover !== false);
    this._subs.set(channel, sub);
    this._sendSubscribe(sub);
    return sub;
  }

  /** The Subscription of channel, if any. */
  getSubscription(channel) {
    return this._subs.get(channel);
  }

  /** Publish data on channel; resolves to {offset}. Queued while disconnected. */
  publish(channel, data) {
    return this._call("publish", { channel, data });
  }

  /** Read a channel's history; resolves to {offset, epoch, publications}. */
  history(channel, options = {}) {
    const params = { channel };
    if (options.limit !== undefined) params.limit = options.limit;
    if (options.since !== undefined) params.since = options.since;
    return this._call("history", params);
  }

  /** Round trip of a ping command in ms (only while connected). */
  ping() {
    if (!this._ready) {
      return Promise.reject(new HeraldError("not connected", "disconnected", "ping"));
    }
    const t0 = this._clock.now();
    return this._internal("ping", undefined).then(() => {
      const rtt = this._clock.now() - t0;
      this._stats.lastRtt = rtt;
      return rtt;
    });
  }

  /** Counters since the client was created. */
  stats() {
    return { ...this._stats, messagesQueued: this._queue.length };
  }

  // ------------------------------------------------------------ internals

  _log(level, ...args) {
    const l = this._logger;
    if (!l) return;
    if (typeof l === "function") l(level, ...args);
    else if (typeof l[level] === "function") l[level]("[herald]", ...args);
  }

  _listenerError(name, e) {
    this._log("error", `listener of "${name}" threw`, e);
    if (name !== "error") this._emit("error", e);
  }

  _onListenerError(name, e) {
    this._listenerError(name, e);
  }

  _setState(s) {
    if (this.state === s) return;
    const old = this.state;
    this.state = s;
    this._emit("state", s, old);
  }

  _clearTimer(name) {
    if (this._timers[name] !== null) {
      this._clock.clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
  }

  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = this._clock.setTimeout(() => {
      this._timers[name] = null;
      fn();
    }, Math.max(0, ms));
  }

  _tokenNearExpiry() {
    return (
      this._expiresAt !== undefined &&
      this._clock.now() >= this._expiresAt * 1000 - this._opt.refreshBefore
    );
  }

  // getToken() with a deadline: a token source that never answers must not
  // leave the client "connecting" for ever.
  _callGetToken() {
    return new Promise((resolve, reject) => {
      const ms = this._opt.connectTimeout;
      const timer = this._clock.setTimeout(
        () => reject(new HeraldError(`getToken() did not answer within ${ms} ms`, "token")),
        ms,
      );
      Promise.resolve()
        .then(() => this._getToken())
        .then(
          (t) => {
            this._clock.clearTimeout(timer);
            resolve(t);
          },
          (e) => {
            this._clock.clearTimeout(timer);
            reject(e);
          },
        );
    });
  }

  async _tokenForConnect() {
    if (this._getToken && (this._needFreshToken || this._token === undefined || this._tokenNearExpiry())) {
      const t = await this._callGetToken();
      if (typeof t !== "string" || !t) throw new HeraldError("getToken() returned no token", "token");
      this._token = t;
      this._needFreshToken = false;
      this._expiresAt = undefined;
    }
    return this._token;
  }

  async _open() {
    const gen = ++this._gen;
    this._setState("connecting");
    let token;
    try {
      token = await this._tokenForConnect();
    } catch (e) {
      if (gen !== this._gen) return;
      this._emit("error", e);
      this._afterClose(gen, 4000, "getToken failed", false);
      return;
    }
    if (gen !== this._gen) return;
    let ws;
    try {
      ws = new this._WS(this.url, SUBPROTOCOL);
    } catch (e) {
      this._emit("error", e);
      this._afterClose(gen, 1006, String(e && e.message), false);
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      if (gen !== this._gen) return;
      this._lastRecv = this._clock.now();
      const params = token === undefined ? {} : { token };
      this._send("connect", params, this._opt.connectTimeout).then(
        (res) => this._onConnected(gen, res),
        (err) => {
          if (gen !== this._gen) return;
          // 401 is followed by a 4500 close from the server; a timeout
          // means the server is stuck: drop the socket and retry.
          this._emit("error", err);
          if (err.code === "timeout") this._drop(gen, 4002, "connect timeout");
        },
      );
    };
    ws.onmessage = (ev) => this._onFrame(gen, ev.data);
    ws.onclose = (ev) => this._onSocketClose(gen, ev.code, ev.reason);
    ws.onerror = noop; // a close event always follows
    // Covers the WebSocket handshake; the connect command has its own timeout.
    this._setTimer("connect", this._opt.connectTimeout * 2, () => this._drop(gen, 4002, "connect timeout"));
  }

  _onConnected(gen, res) {
    if (gen !== this._gen) return;
    this._clearTimer("connect");
    this._ready = true;
    this.info = res;
    this._pingInterval = res.ping_interval_ms > 0 ? res.ping_interval_ms : this._opt.pingInterval;
    this._expiresAt = typeof res.expires_at === "number" ? res.expires_at : undefined;
    this._canRefresh = res.refresh === true;
    this._setState("connected");
    this._setTimer("stable", this._opt.reconnectResetAfter, () => {
      this._attempt = 0;
    });
    this._heartbeat(gen, this._pingInterval);
    this._scheduleRefresh(gen);
    this._emit("connected", res);
    if (gen !== this._gen) return; // a listener disconnected
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    const queued = this._queue;
    this._queue = [];
    for (const q of queued) this._sendQueued(q);
  }

  _onFrame(gen, data) {
    if (gen !== this._gen) return;
    this._lastRecv = this._clock.now();
    if (typeof data !== "string") {
      this._emit("error", new HeraldError("binary frame from the server ignored", "protocol"));
      return;
    }
    for (const line of data.split("\n")) {
      if (gen !== this._gen) return; // a listener closed the connection
      if (!line.trim()) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch (e) {
        this._emit("error", new HeraldError("invalid JSON from the server", "protocol"));
        continue;
      }
      if (msg === null || typeof msg !== "object") continue;
      if (msg.push) this._onServerPush(gen, msg.push);
      else if (typeof msg.id === "number") this._onReply(msg);
      else if (msg.error) {
        const e = msg.error;
        this._emit("error", new HeraldError(String(e.message || "error"), e.code));
      }
    }
  }

  _onReply(msg) {
    const p = this._pending.get(msg.id);
    if (!p) return; // timed out already
    this._pending.delete(msg.id);
    this._clock.clearTimeout(p.timer);
    if (msg.error) {
      const e = msg.error;
      p.reject(new HeraldError(String(e.message || "error"), e.code, p.method));
    } else {
      p.resolve(msg.result === undefined ? {} : msg.result);
    }
  }

  _onServerPush(gen, push) {
    if (push.refresh) {
      if (typeof push.refresh.expires_at === "number") this._expiresAt = push.refresh.expires_at;
      this._refresh(gen);
      return;
    }
    const sub = typeof push.channel === "string" ? this._subs.get(push.channel) : undefined;
    if (!sub) return;
    if (push.pub && typeof push.pub.offset === "number") {
      sub._onPush({ pub: push.pub });
    } else if (push.gap && typeof push.gap.to === "number") {
      sub._onPush({ gap: push.gap });
    }
  }

  // Heartbeat: browsers cannot see WebSocket pings, so when nothing has
  // arrived for the server's ping interval, send a ping command; if then
  // nothing arrives within pongTimeout, the connection is dead.
  _heartbeat(gen, delay) {
    this._setTimer("heartbeat", delay, () => {
      if (gen !== this._gen) return;
      const now = this._clock.now();
      if (this._pingSentAt !== null) {
        if (this._lastRecv >= this._pingSentAt) {
          this._pingSentAt = null;
        } else if (now - this._pingSentAt >= this._opt.pongTimeout) {
          this._drop(gen, 4001, "no reply to ping within pongTimeout");
          return;
        } else {
          this._heartbeat(gen, this._opt.pongTimeout - (now - this._pingSentAt));
          return;
        }
      }
      const idle = now - this._lastRecv;
      if (idle >= this._pingInterval) {
        this._pingSentAt = now;
        this._send("ping", undefined, this._opt.pongTimeout * 2).catch(noop);
        this._heartbeat(gen, this._opt.pongTimeout);
      } else {
        this._heartbeat(gen, this._pingInterval - idle);
      }
    });
  }

  _scheduleRefresh(gen) {
    this._clearTimer("refresh");
    if (!this._canRefresh || !this._getToken || this._expiresAt === undefined) return;
    const left = this._expiresAt * 1000 - this._clock.now();
    // Usually the server's refresh push comes first; this is the fallback.
    const delay = Math.max(left - this._opt.refreshBefore, left / 2, 0);
    this._setTimer("refresh", delay, () => this._refresh(gen));
  }

  async _refresh(gen) {
    if (gen !== this._gen || !this._ready) return;
    if (!this._canRefresh || !this._getToken) {
      // Nothing to do now: at expiry the server closes with 4003 and we
      // reconnect with a fresh token.
      return;
    }
    if (this._refreshing) return;
    this._refreshing = true;
    try {
      const token = await this._callGetToken();
      if (gen !== this._gen) return;
      const res = await this._internal("refresh", { token });
      if (gen !== this._gen) return;
      this._token = token;
      if (res && typeof res.expires_at === "number") this._expiresAt = res.expires_at;
      this._log("debug", "token refreshed, expires at", this._expiresAt);
      this._emit("refreshed", { expires_at: this._expiresAt });
      this._scheduleRefresh(gen);
    } catch (e) {
      if (gen === this._gen) this._emit("error", e);
    } finally {
      this._refreshing = false;
    }
  }

  // Close the current socket from our side (timeouts) and handle it like a
  // close from the server with `code`, without waiting for a close
  // handshake that a dead network never completes.
  _drop(gen, code, reason) {
    if (gen !== this._gen) return;
    this._log("warn", "dropping the connection:", reason);
    this._detachSocket();
    this._onSocketClose(gen, code, reason);
  }

  _detachSocket() {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onclose = noop;
    ws.onerror = noop;
    try {
      ws.close(1000);
    } catch (e) {
      // closing a socket that never opened may throw; it is gone either way
    }
  }

  // Tear down everything that belongs to the current socket.
  _stop() {
    this._gen++;
    this._detachSocket();
    this._ready = false;
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    this._pingSentAt = null;
    this._outbox = [];
    const pending = this._pending;
    this._pending = new Map();
    for (const p of pending.values()) {
      this._clock.clearTimeout(p.timer);
      p.reject(new HeraldError("connection lost before the reply", "disconnected", p.method));
    }
    for (const sub of this._subs.values()) {
      sub._reset();
      if (sub.state !== "unsubscribed") sub.state = "subscribing";
    }
    if (typeof globalThis.removeEventListener === "function" && !this._started) {
      globalThis.removeEventListener("online", this._onOnline);
    }
  }

  _onSocketClose(gen, code, reason) {
    if (gen !== this._gen) return;
    this._ws = null;
    this._afterClose(gen, code, reason || "", true);
  }

  _afterClose(gen, code, reason, wasOpen) {
    this._stop();
    if (!this._started) return;
    let action = closeAction(code);
    if (action === NEW_TOKEN) {
      if (this._getToken) {
        this._needFreshToken = true;
        action = RECONNECT_NOW;
      } else {
        action = TERMINAL; // the same expired token would be refused (4500)
      }
    }
    if (action === TERMINAL) {
      this._started = false;
      if (typeof globalThis.removeEventListener === "function") {
        globalThis.removeEventListener("online", this._onOnline);
      }
      this._rejectQueue("closed", `connection closed for good (${code})`);
      for (const sub of this._subs.values()) sub.state = "unsubscribed";
      this._setState("closed");
      this._log("error", "closed for good:", code, reason);
      this._emit("disconnected", code, reason, false);
      return;
    }
    let delay;
    if (action === RECONNECT_NOW && this._attempt === 0) {
      delay = Math.floor(this._random() * this._opt.immediateReconnectJitter);
      this._attempt = 1;
    } else {
      delay = backoffDelay(this._attempt, this._opt.minReconnectDelay, this._opt.maxReconnectDelay, this._random);
      this._attempt++;
    }
    this._setState("disconnected");
    this._log("info", "disconnected", code, reason, "reconnecting in", delay, "ms");
    this._emit("disconnected", code, reason, true, delay);
    if (!this._started || this._gen !== gen + 1) return; // a listener intervened
    this._setTimer("reconnect", delay, () => {
      this._stats.reconnects++;
      this._open();
    });
  }

  // -------------------------------------------------------- commands

  _frameSend(line) {
    this._outbox.push(line);
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    const gen = this._gen;
    // Everything issued in the same tick goes out in one frame.
    queueMicrotask(() => {
      this._flushScheduled = false;
      if (gen !== this._gen) return;
      this._flush();
    });
  }

  _flush() {
    const ws = this._ws;
    const lines = this._outbox;
    this._outbox = [];
    if (!ws || lines.length === 0) return;
    let frame = "";
    let size = 0;
    try {
      for (const line of lines) {
        const n = byteLength(line);
        if (frame && size + 1 + n > MAX_FRAME_BYTES) {
          ws.send(frame);
          frame = "";
          size = 0;
        }
        frame = frame ? frame + "\n" + line : line;
        size += (size ? 1 : 0) + n;
      }
      if (frame) ws.send(frame);
    } catch (e) {
      // The socket is going away; its close event rejects what was pending.
      this._log("warn", "send failed:", e && e.message);
    }
  }

  // Send a command on the current socket now; rejects at once without one.
  _send(method, params, timeout) {
    return new Promise((resolve, reject) => {
      if (!this._ws) {
        reject(new HeraldError("not connected", "disconnected", method));
        return;
      }
      if (this._pending.size >= this._opt.maxInflightCommands) {
        reject(new HeraldError("too many commands waiting for a reply", "inflight_limit", method));
        return;
      }
      const id = ++this._nextId;
      const msg = params === undefined ? { id, method } : { id, method, params };
      let line;
      try {
        line = JSON.stringify(msg);
      } catch (e) {
        reject(new HeraldError(`cannot encode the command: ${e.message}`, 400, method));
        return;
      }
      if (line.length > MAX_MESSAGE_BYTES / 3 && byteLength(line) > MAX_MESSAGE_BYTES) {
        reject(new HeraldError("message larger than 64 KiB", 413, method));
        return;
      }
      const ms = timeout === undefined ? this._opt.commandTimeout : timeout;
      const timer = this._clock.setTimeout(() => {
        if (this._pending.get(id) !== entry) return;
        this._pending.delete(id);
        reject(new HeraldError(`no reply to ${method} within ${ms} ms`, "timeout", method));
      }, ms);
      const entry = { method, resolve, reject, timer };
      this._pending.set(id, entry);
      this._frameSend(line);
    });
  }

  // Commands of the client itself (subscribe, refresh, history for gaps):
  // only on a ready connection, never queued.
  _internal(method, params) {
    if (!this._ready) {
      return Promise.reject(new HeraldError("not connected", "disconnected", method));
    }
    return this._send(method, params);
  }

  // Application commands: sent now when connected, otherwise queued
  // (bounded) until the next connection.
  _call(method, params) {
    if (this._ready) return this._send(method, params);
    if (this.state === "closed") {
      return Promise.reject(new HeraldError("connection closed for good", "closed", method));
    }
    return new Promise((resolve, reject) => {
      const q = { method, params, resolve, reject };
      if (this._queue.length >= this._opt.maxQueuedMessages) {
        if (this._opt.queueOverflow === "reject" || this._opt.maxQueuedMessages <= 0) {
          this._stats.messagesDropped++;
          reject(new HeraldError("outgoing queue full", "queue_full", method));
          return;
        }
        const old = this._queue.shift();
        this._stats.messagesDropped++;
        old.reject(new HeraldError("dropped from the full outgoing queue", "dropped", old.method));
        this._emit("dropped", { method: old.method, params: old.params });
      }
      this._queue.push(q);
      this._stats.messagesQueuedTotal++;
    });
  }

  _sendQueued(q) {
    this._send(q.method, q.params).then(q.resolve, q.reject);
  }

  _rejectQueue(code, message) {
    const queued = this._queue;
    this._queue = [];
    for (const q of queued) q.reject(new HeraldError(message, code, q.method));
  }

  _sendSubscribe(sub) {
    if (!this._ready || sub._failed) {
      if (sub.state === "unsubscribed" && !sub._failed) sub.state = "subscribing";
      return;
    }
    sub._reset();
    sub.state = "subscribing";
    const recovering = sub.recover && sub.epoch !== undefined && sub.offset !== undefined;
    const params = { channel: sub.channel };
    if (recovering) {
      params.recover = true;
      params.offset = sub.offset;
      params.epoch = sub.epoch;
    }
    const gen = this._gen;
    this._send("subscribe", params).then(
      (res) => {
        if (gen !== this._gen || this._subs.get(sub.channel) !== sub) return;
        sub._onSubscribed(res, recovering);
      },
      (err) => {
        if (gen !== this._gen || this._subs.get(sub.channel) !== sub) return;
        if (err.code === 503 || err.code === "timeout" || err.code === 500) {
          // Redis unavailable (or slow): the server does not queue
          // subscribes, so retry with backoff on this connection.
          const delay = backoffDelay(sub._attempt++, this._opt.minReconnectDelay, this._opt.maxReconnectDelay, this._random);
          this._log("info", "subscribe", sub.channel, "failed with", err.code, "retrying in", delay, "ms");
          sub._retryTimer = this._clock.setTimeout(() => {
            sub._retryTimer = null;
            if (gen === this._gen && this._subs.get(sub.channel) === sub) this._sendSubscribe(sub);
          }, delay);
          sub._emit("error", err);
          return;
        }
        sub._failed = true;
        sub.state = "unsubscribed";
        sub._emit("error", err);
      },
    );
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    this._subs.delete(sub.channel);
    sub._reset();
    const was = sub.state;
    sub.state = "unsubscribed";
    if (this._ready && was !== "unsubscribed") {
      this._send("unsubscribe", { channel: sub.channel }).catch(noop);
    }
    sub._emit("unsubscribed");
  }
}
