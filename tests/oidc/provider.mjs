// A real OpenID Provider for the upstream-mode tests and `make demo-oidc`: `oidc-provider`
// (OpenID Certified) on 127.0.0.1, with one confidential client, PKCE required (S256),
// refresh-token rotation on, short access-token lifetimes, opaque access tokens checked by
// introspection, revocation and RP-initiated logout, and the library's own development
// login and consent pages (any login and password are accepted there).
// `jwtResource: URL` makes it issue JWT access tokens (RFC 9068, `typ: at+jwt`, ES256) for
// that resource indicator (RFC 8707, the resource granted by default), as Auth0 does for an
// API audience; `introspection: false` takes its introspection endpoint away; `dpop: true`
// turns on its DPoP feature (RFC 9449: proofs at the token endpoint, access tokens bound to the
// proof's key with `cnf.jkt`). `backchannelLogoutUri: URL` turns on Back-Channel Logout 1.0
// (`features.backchannelLogout`) and registers that URI as the client's
// `backchannel_logout_uri`; `backchannelSessionRequired: true` sets its
// `backchannel_logout_session_required` (only then do ID tokens and logout tokens carry `sid`).
// `grantsOutliveSession: true` keeps a client's grant (its refresh and access tokens) when the
// user ends the session at the provider (`expiresWithSession` false, as with `offline_access`):
// by default the provider revokes it then, and what the client does about a back-channel
// logout could not be told from that.
//
// As a module: `startProvider(opts)` runs it in the test's process, so a test can stop and
// restart its listener (same keys, same grants) and read what it saw: token-endpoint calls,
// refresh-token reuse, revocations, the refresh tokens it holds.
// As a program (`node tests/oidc/provider.mjs --port 8081 --redirect-uri ...`): the demo.
import { createServer } from "node:http";
import { randomBytes, generateKeyPairSync } from "node:crypto";
import { fileURLToPath } from "node:url";
import Provider, { errors } from "oidc-provider";

export const CLIENT_ID = "tokenwarden-app";

/** An oidc-provider adapter over one Map, so tests can look inside. */
function makeAdapterClass(store) {
  return class MapAdapter {
    constructor(model) { this.model = model; }
    key(id) { return `${this.model}:${id}`; }
    async upsert(id, payload, expiresIn) {
      const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
      store.set(this.key(id), { model: this.model, payload: { ...payload }, expiresAt });
    }
    async find(id) {
      const e = store.get(this.key(id));
      if (!e || e.expiresAt <= Date.now()) return undefined;
      return { ...e.payload };
    }
    async findByUid(uid) {
      for (const e of store.values()) {
        if (e.model === this.model && e.payload.uid === uid && e.expiresAt > Date.now()) return { ...e.payload };
      }
      return undefined;
    }
    async findByUserCode() { return undefined; }
    async consume(id) {
      const e = store.get(this.key(id));
      if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id) { store.delete(this.key(id)); }
    async revokeByGrantId(grantId) {
      for (const [k, e] of store) if (e.payload.grantId === grantId) store.delete(k);
    }
  };
}

/** Signing keys made at start: RSA (ID tokens, RS256) and P-256 (JWT access tokens, ES256). */
function signingKeys() {
  const jwk = (type, opts) => generateKeyPairSync(type, opts).privateKey.export({ format: "jwk" });
  return {
    keys: [
      { ...jwk("rsa", { modulusLength: 2048 }), kid: `rsa-${randomBytes(4).toString("hex")}`, use: "sig", alg: "RS256" },
      { ...jwk("ec", { namedCurve: "P-256" }), kid: `ec-${randomBytes(4).toString("hex")}`, use: "sig", alg: "ES256" },
    ],
  };
}

/**
 * Starts the provider. `port` 0 = any free port. Resolves to
 * `{ issuer, clientId, clientSecret, stats, liveRefreshTokens(), tokenValues(), stop(), start(), close() }`.
 */
/** Whether a `grant.error` is a refresh token presented again (oidc-provider's InvalidGrant
 *  carries the reason in `error_detail`; `error_description` is "grant request is invalid"). */
export function isRefreshReuse(err) {
  return err?.error_detail === "refresh token already used";
}

export async function startProvider({
  port = 0,
  redirectUris,
  postLogoutRedirectUris = [],
  accessTokenTtl = 10,
  clientSecret = randomBytes(24).toString("base64url"),
  jwtResource,
  introspection = true,
  dpop = false,
  backchannelLogoutUri,
  backchannelSessionRequired = false,
  grantsOutliveSession = false,
} = {}) {
  const stats = {
    tokenCalls: 0,
    codeGrants: 0,
    refreshGrants: 0,
    dpopRefreshGrants: 0,
    grantErrors: 0,
    dpopErrors: 0,
    refreshReuse: 0,
    revocations: 0,
    introspections: 0,
    revokedGrants: 0,
    backchannelSuccess: 0,
    backchannelErrors: 0,
  };
  /** Each back-channel logout the provider made: `{ ok, accountId, sid, error, cause }` (messages). */
  const backchannelEvents = [];
  /** Each back-channel POST and its answer: `{ url, contentType, logoutToken, status, cacheControl, body }`. */
  const backchannelRequests = [];
  const store = new Map();
  // Bind first: the issuer must name the real port.
  const server = createServer();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;
  const jwks = signingKeys();

  const provider = new Provider(issuer, {
    adapter: makeAdapterClass(store),
    jwks,
    clients: [{
      client_id: CLIENT_ID,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
      ...(backchannelLogoutUri ? {
        backchannel_logout_uri: backchannelLogoutUri,
        backchannel_logout_session_required: backchannelSessionRequired,
      } : {}),
    }],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Grant: 24 * 3600,
      Interaction: 600,
      Session: 24 * 3600,
    },
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: introspection },
      rpInitiatedLogout: { enabled: true },
      dPoP: { enabled: dpop },
      backchannelLogout: { enabled: Boolean(backchannelLogoutUri) },
      ...(jwtResource ? {
        resourceIndicators: {
          enabled: true,
          // No `resource` parameter needed: the resource is granted by default, and the
          // refresh grant keeps issuing tokens for it.
          defaultResource: () => jwtResource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, resource) => {
            if (resource !== jwtResource) throw new errors.InvalidTarget();
            return { scope: "api:read", audience: jwtResource, accessTokenFormat: "jwt", jwt: { sign: { alg: "ES256" } } };
          },
        },
      } : {}),
    },
    // oidc-provider sends its outgoing requests through a dispatcher that cuts connections to
    // special-use addresses (127.0.0.0/8 among them: the back-channel POST to a 127.0.0.1 URI
    // fails with "hostname resolves to a special-use IP address"). The back-channel URI of
    // these tests is on 127.0.0.1, so that one request (and only it) goes without it.
    // The hook also records each back-channel POST and the answer to it.
    ...(backchannelLogoutUri ? {
      fetch: async (url, options) => {
        if (url !== new URL(backchannelLogoutUri).href) return globalThis.fetch(url, options);
        const { dispatcher: _ssrfGuard, ...rest } = options;
        const record = {
          url,
          contentType: new Headers(rest.headers).get("content-type"),
          logoutToken: new URLSearchParams(rest.body).get("logout_token"),
        };
        backchannelRequests.push(record);
        const res = await globalThis.fetch(url, rest);
        record.status = res.status;
        record.cacheControl = res.headers.get("cache-control");
        record.body = await res.clone().text();
        return res;
      },
    } : {}),
    ...(grantsOutliveSession ? { expiresWithSession: async () => false } : {}),
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  });
  provider.on("grant.success", (ctx) => {
    const type = ctx.oidc.params?.grant_type;
    if (type === "authorization_code") stats.codeGrants++;
    if (type === "refresh_token") stats.refreshGrants++;
    if (type === "refresh_token" && ctx.get("dpop")) stats.dpopRefreshGrants++;
  });
  provider.on("grant.error", (_ctx, err) => {
    stats.grantErrors++;
    if (isRefreshReuse(err)) stats.refreshReuse++;
    if (/dpop/i.test(err?.error || "")) stats.dpopErrors++;
  });
  provider.on("grant.revoked", () => { stats.revokedGrants++; });
  // Emitted by the end-session confirm (lib/actions/end_session.js) once the client's
  // back-channel POST answered 200/204, or failed (any other status, a network error).
  provider.on("backchannel.success", (_ctx, _client, accountId, sid) => {
    stats.backchannelSuccess++;
    backchannelEvents.push({ ok: true, accountId, sid });
  });
  provider.on("backchannel.error", (_ctx, err, _client, accountId, sid) => {
    stats.backchannelErrors++;
    backchannelEvents.push({ ok: false, accountId, sid, error: String(err?.message || err), cause: err?.cause ? String(err.cause.message || err.cause) : undefined });
  });
  // The library logs server errors itself; keep the test output quiet.
  provider.on("server_error", () => {});

  const callback = provider.callback();
  const sockets = new Set();
  server.on("request", (req, res) => {
    const path = req.url.split("?")[0];
    if (path === "/token") stats.tokenCalls++;
    // The library emits no event for these two: count their successful answers.
    if (path === "/token/revocation") res.once("finish", () => { if (res.statusCode === 200) stats.revocations++; });
    if (path === "/token/introspection") res.once("finish", () => { if (res.statusCode === 200) stats.introspections++; });
    callback(req, res);
  });
  server.on("connection", (s) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
  let listening = true;

  return {
    issuer,
    port: actualPort,
    clientId: CLIENT_ID,
    clientSecret,
    stats,
    backchannelEvents,
    backchannelRequests,
    /** The provider's signing keys, private parts included (for tests that sign as the provider). */
    signingKeys: jwks.keys,
    /** The `sid` of each live provider session of `accountId` that signed in to the client. */
    sids(accountId) {
      const out = [];
      for (const e of store.values()) {
        if (e.model !== "Session" || e.expiresAt <= Date.now() || e.payload.accountId !== accountId) continue;
        const sid = e.payload.authorizations?.[CLIENT_ID]?.sid;
        if (sid) out.push(sid);
      }
      return out;
    },
    /** Refresh tokens the provider holds that are neither consumed nor expired (of one account). */
    liveRefreshTokens(accountId) {
      let n = 0;
      for (const e of store.values()) {
        if (e.model === "RefreshToken" && !e.payload.consumed && e.expiresAt > Date.now()
          && (accountId === undefined || e.payload.accountId === accountId)) n++;
      }
      return n;
    },
    /** The values of every refresh and access token the provider has issued and still holds. */
    tokenValues() {
      const out = [];
      for (const [k, e] of store) {
        if (e.model === "RefreshToken" || e.model === "AccessToken") out.push(k.slice(e.model.length + 1));
      }
      return out;
    },
    /** Stops answering: the listener closes and open connections are cut. */
    async stop() {
      if (!listening) return;
      listening = false;
      const closed = new Promise((r) => server.close(r));
      for (const s of sockets) s.destroy();
      await closed;
    },
    /** Listens again on the same port (same keys, same grants). */
    async start() {
      if (listening) return;
      await new Promise((r, j) => { server.once("error", j); server.listen(actualPort, "127.0.0.1", r); });
      listening = true;
    },
    close() { return this.stop(); },
  };
}

// ---- as a program: the provider of `make demo-oidc` ------------------------------------
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : dflt;
  };
  const redirect = arg("--redirect-uri", "http://127.0.0.1:8080/auth/callback");
  const p = await startProvider({
    port: Number(arg("--port", "8081")),
    redirectUris: [redirect],
    postLogoutRedirectUris: [arg("--post-logout-uri", new URL("/", redirect).href)],
    accessTokenTtl: Number(arg("--access-ttl", "60")),
    clientSecret: process.env.TW_OIDC_CLIENT_SECRET || undefined,
  });
  process.stdout.write(`provider ${p.issuer}\n`);
  const bye = async () => { await p.close(); process.exit(0); };
  process.on("SIGINT", bye);
  process.on("SIGTERM", bye);
}
