// A real OpenID Provider for the upstream-mode tests and `make demo-oidc`: `oidc-provider`
// (OpenID Certified) on 127.0.0.1, with one confidential client, PKCE required (S256),
// refresh-token rotation on, short access-token lifetimes, opaque access tokens checked by
// introspection, revocation and RP-initiated logout, and the library's own development
// login and consent pages (any login and password are accepted there).
// `jwtResource: URL` makes it issue JWT access tokens (RFC 9068, `typ: at+jwt`, ES256) for
// that resource indicator (RFC 8707, the resource granted by default), as Auth0 does for an
// API audience; `introspection: false` takes its introspection endpoint away; `dpop: true`
// turns on its DPoP feature (RFC 9449: proofs at the token endpoint, access tokens bound to the
// proof's key with `cnf.jkt`).
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
  };
  const store = new Map();
  // Bind first: the issuer must name the real port.
  const server = createServer();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  const actualPort = server.address().port;
  const issuer = `http://127.0.0.1:${actualPort}`;

  const provider = new Provider(issuer, {
    adapter: makeAdapterClass(store),
    jwks: signingKeys(),
    clients: [{
      client_id: CLIENT_ID,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      post_logout_redirect_uris: postLogoutRedirectUris,
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
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
