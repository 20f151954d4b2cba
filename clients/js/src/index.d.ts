// Type declarations of herald-client. Checked with `tsc --noEmit` against
// examples/typed.ts.

export type ClientState = "disconnected" | "connecting" | "connected" | "closed";
export type ProfileName = "development" | "production" | "high-performance";
export type CloseAction = "reconnect" | "reconnect-now" | "new-token" | "terminal";

/** Every tunable; each overrides its profile's value. Times in milliseconds. */
export interface Tunables {
  minReconnectDelay: number;
  maxReconnectDelay: number;
  /** a connection that stays up this long resets the backoff */
  reconnectResetAfter: number;
  /** upper bound of the random delay before reconnecting after 1012 or 4003 */
  immediateReconnectJitter: number;
  connectTimeout: number;
  commandTimeout: number;
  /** used when the server does not announce ping_interval_ms */
  pingInterval: number;
  pongTimeout: number;
  maxQueuedMessages: number;
  queueOverflow: "drop-oldest" | "reject";
  maxInflightCommands: number;
  maxBufferedPublications: number;
  gapFetchLimit: number;
  refreshBefore: number;
  /** log to the console when no logger is given */
  debug: boolean;
}

export type Logger =
  | ((level: "debug" | "info" | "warn" | "error", ...args: unknown[]) => void)
  | {
      debug?: (...args: unknown[]) => void;
      info?: (...args: unknown[]) => void;
      warn?: (...args: unknown[]) => void;
      error?: (...args: unknown[]) => void;
    };

/** The subset of the WebSocket interface the client uses. */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  onclose: ((ev: { code: number; reason: string }) => any) | null;
  onerror: ((ev: any) => any) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface HeraldClientOptions extends Partial<Tunables> {
  token?: string;
  /** called on the first connect and whenever a fresh token is needed */
  getToken?: () => Promise<string> | string;
  profile?: ProfileName;
  /** WebSocket constructor where there is no global one (Node.js 18-21: the ws package) */
  websocket?: WebSocketConstructor | (new (url: string, protocols?: string | string[]) => any);
  logger?: Logger;
  /** time source and timers (tests) */
  clock?: Clock;
  /** random numbers in [0, 1) for the jitter (tests) */
  random?: () => number;
}

export interface ConnectResult {
  client: string;
  worker: number;
  version: string;
  ping_interval_ms: number;
  expires_at?: number;
  refresh?: boolean;
  [key: string]: unknown;
}

export interface PublicationContext {
  offset: number;
  epoch: string;
  channel: string;
}

export type GapReason = "server" | "not_recovered" | "offset_jump" | "history_failed" | "epoch_changed";

export interface GapEvent {
  reason: GapReason;
  /** first missed offset */
  from: number;
  /** last missed offset */
  to: number;
  epoch: string | undefined;
}

export interface SubscribedEvent {
  offset: number;
  epoch: string;
  recovered: boolean;
}

export interface Publication<T = unknown> {
  offset: number;
  data: T;
}

export interface HistoryResult<T = unknown> {
  offset: number;
  epoch: string;
  publications: Publication<T>[];
}

export interface HistoryOptions {
  limit?: number;
  since?: { offset: number; epoch: string };
}

export interface Stats {
  reconnects: number;
  publicationsDelivered: number;
  duplicatesDropped: number;
  gaps: number;
  /** waiting in the outgoing queue now */
  messagesQueued: number;
  /** ever put in the outgoing queue */
  messagesQueuedTotal: number;
  messagesDropped: number;
  /** ms, null before the first ping() */
  lastRtt: number | null;
}

export declare class HeraldError extends Error {
  /** herald's error code (400, 401, 403, ...) or a client-side one */
  code:
    | number
    | "timeout"
    | "disconnected"
    | "closed"
    | "dropped"
    | "queue_full"
    | "inflight_limit"
    | "token"
    | "protocol";
  method?: string;
  constructor(message: string, code: HeraldError["code"], method?: string);
}

export interface ClientEvents {
  state: (state: ClientState, previous: ClientState) => void;
  connected: (result: ConnectResult) => void;
  /** delay: ms until the next attempt, when reconnect is true */
  disconnected: (code: number, reason: string, reconnect: boolean, delay?: number) => void;
  error: (err: Error) => void;
  dropped: (msg: { method: string; params: unknown }) => void;
  refreshed: (ev: { expires_at: number | undefined }) => void;
}

export interface SubscriptionEvents<T> {
  publication: (data: T, ctx: PublicationContext) => void;
  gap: (gap: GapEvent) => void;
  subscribed: (ev: SubscribedEvent) => void;
  unsubscribed: () => void;
  error: (err: HeraldError) => void;
}

export declare class Subscription<T = any> {
  readonly channel: string;
  readonly recover: boolean;
  readonly state: "unsubscribed" | "subscribing" | "subscribed";
  /** offset of the last publication delivered (or of the subscribe result) */
  readonly offset: number | undefined;
  readonly epoch: string | undefined;
  on<K extends keyof SubscriptionEvents<T>>(name: K, fn: SubscriptionEvents<T>[K]): this;
  off<K extends keyof SubscriptionEvents<T>>(name: K, fn?: SubscriptionEvents<T>[K]): this;
  unsubscribe(): void;
}

export declare class HeraldClient {
  constructor(url: string, options?: HeraldClientOptions);
  readonly url: string;
  readonly profile: ProfileName;
  readonly state: ClientState;
  /** the last connect result */
  readonly info: ConnectResult | null;
  connect(): void;
  disconnect(): void;
  subscribe<T = any>(channel: string, options?: { recover?: boolean }): Subscription<T>;
  getSubscription<T = any>(channel: string): Subscription<T> | undefined;
  publish(channel: string, data: unknown): Promise<{ offset: number }>;
  history<T = any>(channel: string, options?: HistoryOptions): Promise<HistoryResult<T>>;
  ping(): Promise<number>;
  stats(): Stats;
  on<K extends keyof ClientEvents>(name: K, fn: ClientEvents[K]): this;
  off<K extends keyof ClientEvents>(name: K, fn?: ClientEvents[K]): this;
}

export declare const PROFILES: Record<ProfileName, Tunables>;
export declare function closeAction(code: number): CloseAction;
export declare function backoffDelay(attempt: number, min: number, max: number, random?: () => number): number;
