import { test } from "node:test";
import assert from "node:assert/strict";
import { closeAction, backoffDelay, PROFILES } from "../../src/index.js";

test("close-code table: every documented code", () => {
  const want = {
    1000: "reconnect",
    1001: "reconnect",
    1002: "terminal",
    1003: "terminal",
    1006: "reconnect",
    1007: "terminal",
    1009: "terminal",
    1011: "reconnect",
    1012: "reconnect-now",
    1013: "reconnect",
    4000: "reconnect",
    4001: "reconnect",
    4002: "reconnect",
    4003: "new-token",
    4004: "reconnect",
    4499: "reconnect",
    4500: "terminal",
    4501: "terminal",
    4502: "terminal",
    4503: "terminal",
    4999: "terminal",
    1005: "reconnect",
    3000: "reconnect",
  };
  for (const [code, action] of Object.entries(want)) {
    assert.equal(closeAction(Number(code)), action, `close code ${code}`);
  }
});

test("backoff: bounds grow exponentially and stop at the maximum", () => {
  const min = 500;
  const max = 20000;
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(max, min * 2 ** (attempt + 1));
    assert.equal(backoffDelay(attempt, min, max, () => 0), min, `attempt ${attempt} low end`);
    const hi = backoffDelay(attempt, min, max, () => 0.999999);
    assert.ok(hi <= cap && hi >= cap - 1, `attempt ${attempt}: ${hi} vs cap ${cap}`);
  }
  assert.equal(backoffDelay(1000, min, max, () => 0.999999), max - 1);
});

test("backoff: full jitter spreads delays over the whole window", () => {
  const min = 100;
  const max = 5000;
  const samples = [];
  for (let i = 0; i < 2000; i++) samples.push(backoffDelay(10, min, max));
  for (const s of samples) assert.ok(s >= min && s < max, String(s));
  // ten equal buckets over [min, max): each gets a fair share
  const buckets = new Array(10).fill(0);
  for (const s of samples) buckets[Math.floor(((s - min) / (max - min)) * 10)]++;
  for (const b of buckets) assert.ok(b > 100, `uneven spread ${buckets}`);
});

test("profiles: every profile has every tunable; production queues 200", () => {
  const keys = Object.keys(PROFILES.production).sort();
  for (const p of ["development", "production", "high-performance"]) {
    assert.deepEqual(Object.keys(PROFILES[p]).sort(), keys, p);
  }
  assert.equal(PROFILES.production.maxQueuedMessages, 200);
  assert.equal(PROFILES.production.debug, false);
  assert.equal(PROFILES.development.debug, true);
});
