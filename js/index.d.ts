/** Options of createTokenClient (unknown keys are an error). */
export interface TokenClientOptions {
  /** Refresh endpoint, absolute or relative to the page. */
  refreshUrl: string | URL;
  /** Logout endpoint; without it logout() only clears locally. */
  logoutUrl?: string | URL;
  /** Where login() sends the browser to sign in at the identity provider (e.g. "/auth/login"). */
  loginUrl?: string | URL;
  /** Refresh when this little lifetime is left (default 30). */
  refreshSkewSeconds?: number;
  /** Exact origins whose requests get the Bearer header (default: the page origin). */
  allowedOrigins?: string[];
  /** Extra headers on refresh and logout calls (default { "X-Requested-With": "tokenwarden" }). */
  refreshHeaders?: Record<string, string>;
  /** Coordinate refreshes, sign-in and sign-out across tabs (default true). */
  crossTab?: boolean;
  /** Name of the cross-tab channel and lock (default "tokenwarden"). */
  channelName?: string;
  /** Timeout of one refresh or logout call in ms (default 10000). */
  requestTimeoutMs?: number;
  /** Backoff for transient refresh failures (default 5, 1000, 30000). */
  retry?: { maxAttempts?: number; baseDelayMs?: number; maxDelayMs?: number };
  /**
   * Bind tokens to a non-extractable key held in memory and shared by the origin's tabs
   * (RFC 9449, default false): fetch sends `Authorization: DPoP <token>` plus a `DPoP` proof
   * for a token issued as `token_type: "DPoP"`; a token the backend returned as `Bearer` (it does
   * not bind) goes as `Bearer` without a proof.
   */
  dpop?: boolean;
}

/** OAuth 2.0 token response (RFC 6749 §5.1). */
export interface TokenResponse {
  access_token: string;
  token_type?: string;
  expires_in?: number | string;
  [extra: string]: unknown;
}

export type TokenClientErrorCode =
  | "invalid_options"
  | "unsupported_environment"
  | "network"
  | "timeout"
  | "server_error"
  | "refresh_rejected"
  | "invalid_response"
  | "signed_out"
  | "disposed";

export declare class TokenClientError extends Error {
  readonly name: "TokenClientError";
  readonly code: TokenClientErrorCode;
  /** HTTP status for server_error and refresh_rejected, and for network when the package's
   *  .wasm could not be downloaded because its server answered with an error. */
  readonly status?: number;
  /** The OAuth `error` field of a refresh_rejected response, when given. */
  readonly error?: string;
  /** The original error of a failed request (code network), or the browser's own error when
   *  it would not compile the package's .wasm (code unsupported_environment). */
  readonly cause?: unknown;
  constructor(message: string, code?: TokenClientErrorCode);
}

export type TokenClientState = "signedOut" | "active" | "refreshing";
export type SignedOutReason = "logout" | "rejected" | "expired" | "tab";

export type TokenClientEvent =
  | { type: "signedIn"; expiresAt: number | undefined }
  | { type: "refreshed"; expiresAt: number | undefined; source: "self" | "tab" }
  | { type: "refreshFailed"; error: TokenClientError; retryInMs: number | null }
  | { type: "signedOut"; reason: SignedOutReason }
  | { type: "stateChanged"; state: TokenClientState };

/**
 * The client (a class emitted by wasm-bindgen; made by createTokenClient,
 * so exported as a type only).
 */
declare class TokenClient {
  /** `new TokenClient(options)` in the raw wasm-bindgen glue; throws invalid_options. */
  constructor(options: TokenClientOptions);
  /** Restore a session: other tabs first, then the refresh endpoint once. */
  start(): Promise<boolean>;
  /** Accept the app's own login response; throws invalid_response. */
  setSession(response: TokenResponse): void;
  /** A token not due for refresh (refreshing first when due), or null when signed out. */
  getToken(): Promise<string | null>;
  /** "Bearer <token>" (with dpop and a bound token: "DPoP <token>", which needs a proof: use authorize) or null. */
  authorizationHeader(): Promise<string | null>;
  /**
   * The headers fetch would add to a `method` request to `url` (`Authorization`, and `DPoP`
   * when on; a proof is good for one request), or null for an origin not allowed or when
   * signed out. For axios/ky interceptors.
   */
  authorize(method: string, url: string | URL): Promise<Record<string, string> | null>;
  /** window.fetch with the Bearer header for allowed origins. An abort of the request's signal
   *  rejects at once with its reason, also while the call waits for a refresh. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /** Force a refresh now (shares one in flight). */
  refresh(): Promise<string>;
  /** Clear locally, tell other tabs, then POST logoutUrl. Resolves with the provider's
   *  RP-initiated logout URL when the backend returns one (upstream mode), else undefined. */
  logout(): Promise<string | undefined>;
  /** Top-level navigation to `loginUrl?returnTo=…` (default: this page); throws invalid_options
   *  without loginUrl. After the callback, start() resolves true. */
  login(returnTo?: string): void;
  /** Listen to events; returns the unsubscribe function. */
  subscribe(listener: (event: TokenClientEvent) => void): () => void;
  readonly state: TokenClientState;
  /** Expiry in epoch ms of this page's clock. */
  readonly expiresAt: number | undefined;
  /** When the next silent refresh is planned, epoch ms of this page's clock. */
  readonly refreshAt: number | undefined;
  /** The JWT payload, decoded but NOT verified; undefined for opaque tokens. */
  claims(): Record<string, unknown> | undefined;
  hasScope(scope: string): boolean;
  /** Stop timers, leave the channel; later calls reject with disposed. */
  dispose(): void;
  /** wasm-bindgen's explicit release of the Rust value (dispose() and more). */
  free(): void;
}
export type { TokenClient };

/** Loads the wasm once (createTokenClient does this for you). A failed load rejects with a
 *  TokenClientError: network (the .wasm could not be downloaded) or unsupported_environment
 *  (no WebAssembly, or the browser would not compile it: a Content-Security-Policy without
 *  'wasm-unsafe-eval'); it is not kept, and the next call loads again. */
export declare function init(): Promise<unknown>;
export declare function createTokenClient(options: TokenClientOptions): Promise<TokenClient>;
