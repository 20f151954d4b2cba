// What the client does about each close code, and the profiles of tunables.
// Both tables are documented in README.md; keep them in step.

/** Close-code actions. */
export const RECONNECT = "reconnect"; // with exponential backoff and full jitter
export const RECONNECT_NOW = "reconnect-now"; // at once, after a small jitter
export const NEW_TOKEN = "new-token"; // call getToken, then reconnect at once
export const TERMINAL = "terminal"; // state "closed", no retry

// The one table of close codes. Ranges are checked after the exact codes;
// anything else (1000, 1005, 1008, 1014, 1015, 3xxx, ...) reconnects with
// backoff: a server we do not understand is no reason to give up.
const CLOSE_CODES = new Map([
  [1001, RECONNECT], // server shutting down
  [1002, TERMINAL], // protocol error: a client bug, retrying repeats it
  [1003, TERMINAL], // binary frame
  [1006, RECONNECT], // dropped without a close frame (network, worker died)
  [1007, TERMINAL], // invalid UTF-8
  [1009, TERMINAL], // message too big
  [1011, RECONNECT], // internal error
  [1012, RECONNECT_NOW], // worker replaced (reload, scale-down)
  [1013, RECONNECT], // try again later
  [4003, NEW_TOKEN], // token expired while connected
]);

const CLOSE_RANGES = [
  [4000, 4499, RECONNECT],
  [4500, 4999, TERMINAL],
];

/** The action for a close code (see the table in README.md). */
export function closeAction(code) {
  const exact = CLOSE_CODES.get(code);
  if (exact !== undefined) return exact;
  for (const [lo, hi, action] of CLOSE_RANGES) {
    if (code >= lo && code <= hi) return action;
  }
  return RECONNECT;
}

/**
 * Every tunable, per profile. Options given to the constructor override
 * the profile's value one by one.
 */
export const PROFILES = {
  development: {
    minReconnectDelay: 100,
    maxReconnectDelay: 2000,
    reconnectResetAfter: 5000,
    immediateReconnectJitter: 100,
    connectTimeout: 10000,
    commandTimeout: 10000,
    pingInterval: 25000,
    pongTimeout: 5000,
    maxQueuedMessages: 1000,
    queueOverflow: "drop-oldest",
    maxInflightCommands: 1000,
    maxBufferedPublications: 1000,
    gapFetchLimit: 1000,
    refreshBefore: 10000,
    debug: true,
  },
  production: {
    minReconnectDelay: 500,
    maxReconnectDelay: 20000,
    reconnectResetAfter: 10000,
    immediateReconnectJitter: 250,
    connectTimeout: 10000,
    commandTimeout: 10000,
    pingInterval: 25000,
    pongTimeout: 10000,
    maxQueuedMessages: 200,
    queueOverflow: "drop-oldest",
    maxInflightCommands: 1000,
    maxBufferedPublications: 1000,
    gapFetchLimit: 1000,
    refreshBefore: 10000,
    debug: false,
  },
  "high-performance": {
    minReconnectDelay: 100,
    maxReconnectDelay: 5000,
    reconnectResetAfter: 5000,
    immediateReconnectJitter: 100,
    connectTimeout: 5000,
    commandTimeout: 5000,
    pingInterval: 25000,
    pongTimeout: 5000,
    maxQueuedMessages: 10000,
    queueOverflow: "drop-oldest",
    maxInflightCommands: 10000,
    maxBufferedPublications: 10000,
    gapFetchLimit: 1000,
    refreshBefore: 10000,
    debug: false,
  },
};

/**
 * Backoff delay in ms before reconnect attempt number `attempt` (0 for the
 * first): full jitter between min and min(max, min * 2^(attempt + 1)).
 */
export function backoffDelay(attempt, min, max, random = Math.random) {
  const cap = Math.min(max, min * Math.pow(2, Math.min(attempt, 30) + 1));
  return Math.floor(min + random() * (cap - min));
}
