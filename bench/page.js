// Browser side of the benchmark (served at /bench/page.js by bench.mjs).
// Every `run*` function times a batch of `n` operations inside the page
// with performance.now() and returns the elapsed milliseconds; bench.mjs
// drives the rounds, interleaves the variants and does the statistics, so
// the CDP round trip is never inside a measurement.

const realFetch = window.fetch.bind(window);
// The stub every "stubbed fetch" variant ends in: resolves at once.
const stubFetch = async () => new Response(null, { status: 204 });

let cfg; // { token, tokenResponse }
let tw; // the tokenwarden client
let twDpop; // a second client with dpop: true (its token bound, its key made at the first proof)
let a0Fetcher; // auth0-spa-js createFetcher with useDpop
let jwtDecode, axios, createAuthRefreshInterceptor, ky;
let ax, kyc; // axios instance, ky instance
let token;
let sink = 0; // defeats dead-code elimination

// ---------------------------------------------------------------------------
// The minimal hand-written wrapper: the limit a token manager can reach.
// Adds the header when the origin is allowed and the caller set none, then
// calls fetch.
const ALLOWED = location.origin;
function miniFetch(input, init) {
  const url = new URL(input instanceof Request ? input.url : input, location.href);
  if (url.origin === ALLOWED) {
    const headers = new Headers(init && init.headers);
    if (!headers.has("authorization")) headers.set("Authorization", "Bearer " + token);
    init = { ...init, headers };
  }
  return fetch(input, init);
}

// The minimal claims decoder: atob + JSON.parse of the middle part, every call.
function miniClaims(t) {
  const p = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(p));
}
// The same, memoised: returns the last result while the token is unchanged. The anchor for
// tokenwarden's cached claims() (a per-token cache, compared with a per-token cache).
let memoToken, memoClaims;
function miniClaimsMemo(t) {
  if (t !== memoToken) {
    memoClaims = miniClaims(t);
    memoToken = t;
  }
  return memoClaims;
}

/** The step of performance.now() in this page (ms): the smallest non-zero difference seen. */
function clockStep() {
  let step = Infinity;
  for (let k = 0, last = performance.now(); k < 200; k++) {
    let t;
    while ((t = performance.now()) === last);
    step = Math.min(step, t - last);
    last = t;
  }
  return step;
}

export async function setup(c) {
  cfg = c;
  token = c.token;
  ({ jwtDecode } = await import("/lib/jwt-decode.js"));
  ({ axios, createAuthRefreshInterceptor } = await import("/lib/axios.js"));
  ({ default: ky } = await import("/lib/ky.js"));
  const { createTokenClient } = await import("/pkg/index.js");
  // The default options (crossTab on: the client joins its BroadcastChannel), as an app gets them.
  tw = await createTokenClient({ refreshUrl: "/auth/refresh" });
  tw.setSession(c.tokenResponse);

  // axios as people use it for this job: an instance, a request interceptor
  // that adds the Bearer header, and axios-auth-refresh for 401s. The fetch
  // adapter, so that it ends in the same (stubbed or real) window.fetch as
  // every other variant.
  ax = axios.create({ adapter: "fetch" });
  ax.interceptors.request.use((config) => {
    config.headers.Authorization = "Bearer " + token;
    return config;
  });
  createAuthRefreshInterceptor(ax, () => Promise.resolve());
  // ky with a beforeRequest hook; no retry (nothing to retry on a 204).
  kyc = ky.create({
    retry: 0,
    hooks: { beforeRequest: [(req) => req.headers.set("Authorization", "Bearer " + token)] },
  });
  // Sanity: every variant really adds the header (checked on a stub that
  // records it).
  const seen = {};
  window.fetch = async (input, init) => {
    const h = new Request(input, init).headers.get("authorization");
    seen.last = h;
    return new Response(null, { status: 204 });
  };
  const check = {};
  for (const [name, f] of Object.entries(FETCHERS)) {
    seen.last = undefined;
    await f("/204");
    // raw sends no header: what is checked is that it reached the stub at all.
    check[name] = name === "raw" ? seen.last === null : seen.last === "Bearer " + token;
  }
  window.fetch = realFetch;
  const wrong = Object.keys(check).filter((k) => !check[k]);
  // A variant that does not add the header (or never reaches fetch) would be timed doing
  // less than the others: the run stops instead of reporting it.
  if (wrong.length) throw new Error(`fetch variants without the Bearer header: ${wrong.join(", ")}`);
  const tokenRead = await setupTokenReaders();
  return { crossOriginIsolated: self.crossOriginIsolated, clockStepMs: clockStep(), headerCheck: check, tokenRead };
}

// ---------------------------------------------------------------------------
// The token-read anchors: what an app awaits for "the current access token" with the
// libraries people use instead, each holding a valid token already.
let a0Reader; // auth0-spa-js Auth0Client, in-memory cache (its default) holding a token
let oidcReader; // oidc-client-ts UserManager, its default user store (sessionStorage) holding a user

async function setupTokenReaders() {
  const out = {};
  try {
    // oidc-client-ts: the user a sign-in stores (User.toStorageString()'s fields), written
    // as UserManager.storeUser() writes it (its userStore, its key: the bundle does not
    // export User); getUser() reads the store, JSON.parses it into a User and loads the
    // access-token timers, every call.
    const { UserManager } = await import("/lib/oidc-client-ts.js");
    const settings = { authority: location.origin, client_id: "bench", redirect_uri: location.origin + "/", automaticSilentRenew: false };
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    oidcReader = new UserManager(settings);
    await oidcReader.settings.userStore.set(
      oidcReader._userStoreKey,
      JSON.stringify({ access_token: token, token_type: "Bearer", scope: "openid profile email", profile: claims, expires_at: claims.exp }),
    );
    const u = await oidcReader.getUser();
    out["oidc-client-ts getUser"] = !!u && u.access_token === token;
  } catch (e) {
    out["oidc-client-ts getUser"] = String(e && e.message);
  }
  try {
    // auth0-spa-js: the entry a login stores (Auth0Client._saveEntryInCache: the id token,
    // then the access token under the client's default scope), written through the client's
    // own cache manager into its default in-memory cache; getTokenSilently() then answers
    // from the cache.
    const { Auth0Client } = await import("/lib/auth0-spa-js-dpop.js");
    const a0 = new Auth0Client({ domain: location.host, clientId: "bench", cacheLocation: "memory" });
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const decodedToken = { claims: { __raw: token, ...claims }, user: { sub: claims.sub, name: claims.name, email: claims.email } };
    const scope = a0.scope.default;
    await a0.cacheManager.setIdToken("bench", token, decodedToken);
    await a0.cacheManager.set({ client_id: "bench", audience: "default", scope, access_token: token, id_token: token, token_type: "Bearer", expires_in: 3600, decodedToken });
    a0Reader = a0;
    // cache-only: would answer undefined (never a network call) if the seeding missed
    out["auth0-spa-js getTokenSilently"] = (await a0.getTokenSilently({ cacheMode: "cache-only" })) === token;
  } catch (e) {
    out["auth0-spa-js getTokenSilently"] = String(e && e.message);
  }
  return out;
}

// Each fetcher sends one GET to `url` and resolves once the response is in
// hand (204: no body to read).
const FETCHERS = {
  raw: (url) => fetch(url),
  minimal: (url) => miniFetch(url),
  axios: (url) => ax.get(url),
  ky: (url) => kyc.get(url),
  tokenwarden: (url) => tw.fetch(url),
};

// DPoP (issue 15): the same GET with a fresh proof per call. Not in FETCHERS:
// their Authorization is "DPoP …", not the Bearer header setup() checks.
const DPOP_FETCHERS = {
  "tokenwarden dpop": (url) => twDpop.fetch(url),
  "auth0-spa-js createFetcher useDpop": (url) => a0Fetcher.fetchWithAuth(url),
};

/** Makes the DPoP clients; returns which headers each sends (names only). */
export async function setupDpop() {
  const { createTokenClient } = await import("/pkg/index.js");
  twDpop = await createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false, dpop: true, channelName: "bench-dpop" });
  twDpop.setSession({ ...cfg.tokenResponse, token_type: "DPoP" });
  const out = {};
  try {
    const { Auth0Client } = await import("/lib/auth0-spa-js-dpop.js");
    const a0 = new Auth0Client({ domain: location.host, clientId: "bench", useDpop: true, cacheLocation: "memory" });
    // `fetch` looked up per call, so that it ends in the same (stubbed or real) window.fetch.
    a0Fetcher = a0.createFetcher({
      getAccessToken: async () => token,
      dpopNonceId: "bench",
      fetch: (input, init) => window.fetch(input, init),
    });
  } catch (e) {
    out.auth0Error = String(e && e.message);
  }
  const seen = {};
  window.fetch = async (input, init) => {
    const r = new Request(input, init);
    seen.auth = (r.headers.get("authorization") || "").split(" ")[0];
    seen.proof = (r.headers.get("dpop") || "").split(".").length === 3;
    return new Response(null, { status: 204 });
  };
  try {
    for (const [name, f] of Object.entries(DPOP_FETCHERS)) {
      seen.auth = seen.proof = null;
      try {
        await f("/204"); // also makes the key
        out[name] = { scheme: seen.auth, proof: seen.proof };
      } catch (e) {
        out[name] = { error: String(e && e.message) };
      }
    }
  } finally {
    window.fetch = realFetch;
  }
  return out;
}

// Diagnostics (stubbed fetch only): what the Request-object path costs by
// itself, i.e. the floor of a wrapper that builds a Request (to inspect the
// final URL and headers) and keeps a clone for a 401 replay.
const DIAG = {
  "diag: fetch(new Request(url))": (url) => fetch(new Request(url)),
  "diag: new Request + set header + clone": (url) => {
    const r = new Request(url);
    r.headers.set("Authorization", "Bearer " + token);
    r.clone();
    return fetch(r);
  },
};

/** n sequential awaited calls of one fetcher; fetch stubbed or real. */
export async function runFetch(variant, n, stubbed, url = "/204") {
  const f = FETCHERS[variant] || DIAG[variant] || DPOP_FETCHERS[variant];
  window.fetch = stubbed ? stubFetch : realFetch;
  try {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await f(url);
    return performance.now() - t0;
  } finally {
    window.fetch = realFetch;
  }
}

const floorGet = async () => token;
/** n sequential awaited token reads on a token that is not due. */
export async function runGetToken(variant, n) {
  let t0;
  switch (variant) {
    case "tokenwarden":
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= (await tw.getToken()).length;
      break;
    case "auth0-spa-js getTokenSilently":
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= (await a0Reader.getTokenSilently()).length;
      break;
    case "oidc-client-ts getUser":
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= (await oidcReader.getUser()).access_token.length;
      break;
    case "floor": // awaiting an async function that returns the token
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= (await floorGet()).length;
      break;
    default:
      throw new Error("unknown variant " + variant);
  }
  return performance.now() - t0;
}

/** n claims decodes of the 11-claim ES256 token. */
export function runClaims(variant, n) {
  const t = cfg.token;
  let t0;
  switch (variant) {
    case "tw-cached": // claims() after setSession: the per-token cache
      tw.setSession(cfg.tokenResponse);
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= tw.claims().iat;
      break;
    case "tw-fresh": // setSession + claims(): a new token every time
      t0 = performance.now();
      for (let i = 0; i < n; i++) {
        tw.setSession(cfg.tokenResponse);
        sink ^= tw.claims().iat;
      }
      break;
    case "tw-setSession": // setSession alone (to split tw-fresh)
      t0 = performance.now();
      for (let i = 0; i < n; i++) tw.setSession(cfg.tokenResponse);
      break;
    case "jwt-decode":
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= jwtDecode(t).iat;
      break;
    case "minimal": // a full decode every call
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= miniClaims(t).iat;
      break;
    case "minimal-memo": // the same, memoised per token (the anchor of tw-cached)
      memoToken = undefined; // the batch's first call decodes, as tw-cached's first claims() parses
      t0 = performance.now();
      for (let i = 0; i < n; i++) sink ^= miniClaimsMemo(t).iat;
      break;
    default:
      throw new Error("unknown variant " + variant);
  }
  return performance.now() - t0;
}

export function sinkValue() {
  return sink;
}
