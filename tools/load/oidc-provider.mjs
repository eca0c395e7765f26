// The anchor of `make load`: oidc-provider (npm, OpenID Certified; the copy installed in
// tests/oidc/node_modules), as people run it, on 127.0.0.1, measured by the same load client
// as tokenwarden (`tokenwarden-load --oidc`).
//
//   node tools/load/oidc-provider.mjs CLIENT_SECRET
//
// Prints `listening on http://127.0.0.1:PORT` once it serves (the line run.sh waits for).
// One confidential client `load` (client_secret_basic, code flow, refresh_token grant),
// refresh-token rotation on (`rotateRefreshToken: true`: every refresh consumes the token
// presented and issues a new one; a consumed token presented again revokes the grant), ID
// tokens signed ES256 on every refresh (one ES256 signature per rotation, like tokenwarden's
// JWT access token), opaque access tokens, checked by /me (userinfo).
//
// Sign-in without a browser: the library's development pages are off (`devInteractions`);
// this file's interaction route logs in the account named by `login_hint` and consents to the
// scopes asked, the documented `interactionFinished` way an app's own login page would. So each
// virtual user runs the real authorization-code flow once (GET /auth, the interaction, the
// resume, POST /token) and gets its own account and grant.
//
// Storage: an in-memory adapter (Maps, with an index for the lookups by uid the library makes):
// compare with tokenwarden's memory set-up. (The library's own development adapter is an LRU
// of 1000 entries, which would evict live grants under load.)
//
// `GET /load/stats` (this file's, not the library's): grants served and refused, reuse, and the
// provider's server errors, for the client's checks. A server error is also logged on stderr as
// an ` ERROR ` line, which fails the run.
import { createServer } from "node:http";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const { default: Provider } = await import(
  pathToFileURL(join(here, "../../tests/oidc/node_modules/oidc-provider/lib/index.js")).href
);

const clientSecret = process.argv[2];
if (!clientSecret) {
  process.stderr.write("usage: node tools/load/oidc-provider.mjs CLIENT_SECRET\n");
  process.exit(2);
}

/** In-memory adapter: one Map of entries, one index by uid. */
const store = new Map();
const byUid = new Map();
class MemoryAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { payload, expiresAt });
    if (payload.uid) byUid.set(`${this.model}:${payload.uid}`, id);
  }
  async find(id) {
    const e = store.get(this.key(id));
    if (!e || e.expiresAt <= Date.now()) return undefined;
    return e.payload;
  }
  async findByUid(uid) {
    const id = byUid.get(`${this.model}:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }
  async findByUserCode() { return undefined; }
  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) {
    const e = store.get(this.key(id));
    if (e?.payload.uid) byUid.delete(`${this.model}:${e.payload.uid}`);
    store.delete(this.key(id));
  }
  async revokeByGrantId(grantId) {
    for (const [k, e] of store) if (e.payload.grantId === grantId) store.delete(k);
  }
}

const stats = { codeGrants: 0, refreshGrants: 0, grantErrors: 0, refreshReuse: 0, serverErrors: 0 };

const server = createServer();
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  jwks: {
    keys: [{
      ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }),
      kid: `ec-${randomBytes(4).toString("hex")}`, use: "sig", alg: "ES256",
    }],
  },
  clients: [{
    client_id: "load",
    client_secret: clientSecret,
    redirect_uris: [`${issuer}/cb`],
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    id_token_signed_response_alg: "ES256",
  }],
  // PKCE guards the code in a browser; the load client is a confidential client whose code
  // never leaves loopback, and the code exchange happens before the clock.
  pkce: { required: () => false },
  rotateRefreshToken: true,
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Grant: 24 * 3600,
    Interaction: 600,
    Session: 24 * 3600,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: { devInteractions: { enabled: false } },
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
});
provider.on("grant.success", (ctx) => {
  const type = ctx.oidc.params?.grant_type;
  if (type === "authorization_code") stats.codeGrants++;
  if (type === "refresh_token") stats.refreshGrants++;
});
provider.on("grant.error", (_ctx, err) => {
  stats.grantErrors++;
  // oidc-provider's InvalidGrant carries the reason in error_detail (error_description is
  // "grant request is invalid"; tests/oidc/provider.mjs isRefreshReuse, tested there).
  if (err?.error_detail === "refresh token already used") stats.refreshReuse++;
});
provider.on("server_error", (_ctx, err) => {
  stats.serverErrors++;
  process.stderr.write(`${new Date().toISOString()} ERROR oidc-provider server_error: ${err?.stack || err}\n`);
});

/** The app's login page, without the page: the account is the request's login_hint. */
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  const accountId = params.login_hint;
  if (!accountId) {
    res.statusCode = 400;
    res.end("login_hint required");
    return;
  }
  const result = {};
  if (prompt.name === "login") result.login = { accountId };
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  result.consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
server.on("request", (req, res) => {
  const path = req.url.split("?")[0];
  if (path === "/load/stats") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(stats));
  } else if (req.method === "GET" && path.startsWith("/interaction/")) {
    interaction(req, res).catch((err) => {
      stats.serverErrors++;
      process.stderr.write(`${new Date().toISOString()} ERROR interaction: ${err?.stack || err}\n`);
      res.statusCode = 500;
      res.end();
    });
  } else {
    callback(req, res);
  }
});
process.stdout.write(`listening on ${issuer}\n`);
const bye = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
process.on("SIGINT", bye);
process.on("SIGTERM", bye);
