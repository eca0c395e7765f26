// Several reference-server instances on one PostgreSQL behind a small round-robin proxy.
//
// DATABASE_URL names the PostgreSQL (tests/multi/run.sh starts a throw-away one with
// scripts/pg.sh). Every cluster gets a database of its own (CREATE DATABASE), so the
// store counts of one test file never see another's families. The instances are the
// e2e harness's test-mode servers (startServer) with --database-url; the proxy listens on
// 127.0.0.1:0, keeps the Host header (the servers' same-origin checks see the proxy's
// origin, as behind a real load balancer), sends requests to the instances in turn (a
// separate turn for POST /auth/refresh, so refreshes strictly alternate) and can drop
// the response of a refresh after the instance committed it (a lost response).
import { createServer, request as httpRequest } from "node:http";
import { execFileSync } from "node:child_process";
import { refreshCookieHeader } from "../support/cookies.mjs";
import { existsSync, readdirSync } from "node:fs";
import { startServer } from "../e2e/harness.mjs";
import { randomBytes } from "node:crypto";
import { freePort } from "../support/ports.mjs";

const BAD_GATEWAY =
  "<!doctype html><html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>";

function pgBin(tool = "psql") {
  const root = "/usr/lib/postgresql";
  if (existsSync(root)) {
    for (const v of readdirSync(root).sort().reverse()) {
      const p = `${root}/${v}/bin/${tool}`;
      if (existsSync(p)) return p;
    }
  }
  return tool;
}
const psqlBin = () => pgBin("psql");

/** Everything a database holds, as pg_dump's plain-text SQL (what a stolen backup shows). */
export function dumpDatabase(databaseUrl) {
  return execFileSync(pgBin("pg_dump"), ["--data-only", "--no-owner", databaseUrl], {
    encoding: "utf8",
    maxBuffer: 64 << 20,
  });
}

/** A new empty database on DATABASE_URL's server; its URL. */
export function freshDatabaseUrl() {
  const base = process.env.DATABASE_URL;
  if (!base) throw new Error("DATABASE_URL is not set (tests/multi/run.sh starts a PostgreSQL)");
  const name = `tw_multi_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
  execFileSync(psqlBin(), [base, "-qAtc", `CREATE DATABASE ${name}`], { stdio: ["ignore", "ignore", "inherit"] });
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Round-robin HTTP proxy in front of `upstreams` (base URLs), on `port` (0 = any free one). */
export async function startProxy(upstreams, { port: listenPort = 0 } = {}) {
  const targets = upstreams.map((u) => new URL(u));
  const state = { next: 0, nextRefresh: 0, dropRefreshes: 0, dropped: 0, byInstance: targets.map(() => ({ all: 0, refresh: 0 })) };
  const server = createServer((req, res) => {
    const isRefresh = req.method === "POST" && req.url.split("?")[0] === "/auth/refresh";
    const i = isRefresh ? state.nextRefresh++ % targets.length : state.next++ % targets.length;
    state.byInstance[i].all++;
    if (isRefresh) state.byInstance[i].refresh++;
    const drop = isRefresh && state.dropRefreshes > 0;
    if (drop) state.dropRefreshes--;
    const t = targets[i];
    const up = httpRequest(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        if (drop) {
          // The instance answered (the rotation is committed); the answer never arrives.
          upRes.resume();
          upRes.on("end", () => {
            state.dropped++;
            res.writeHead(502, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
            res.end(BAD_GATEWAY);
          });
          return;
        }
        res.writeHead(upRes.statusCode, upRes.rawHeaders);
        upRes.pipe(res);
      },
    );
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end("bad gateway");
    });
    req.pipe(up);
  });
  await new Promise((r) => server.listen(listenPort, "127.0.0.1", r));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    /** Drop the responses of the next `n` refreshes after the instance answered them. */
    dropNextRefreshes(n = 1) { state.dropRefreshes += n; },
    stop: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

/** Numbers summed over instances, except the store's counts (one database: taken once). */
function sumCounters(list) {
  const out = {};
  for (const c of list) {
    for (const [k, v] of Object.entries(c)) {
      if (k === "liveFamilies" || k === "familiesWithOneLiveToken") out[k] = v;
      else out[k] = (out[k] || 0) + v;
    }
  }
  return out;
}

/**
 * `n` instances on a fresh database behind a proxy. `args`: extra server flags for every
 * instance; `instanceArgs[i]`: flags for instance i only, after `args` (e.g. a `--port` known
 * up front: a later `--port` wins); `port`: the proxy's port (0 = any; upstream mode needs
 * it known up front for its redirect URI).
 */
export async function startCluster({ n = 2, args = [], instanceArgs = [], port = 0 } = {}) {
  const databaseUrl = freshDatabaseUrl();
  const instances = [];
  try {
    // One after the other: the first creates the schema and the first shared key.
    for (let i = 0; i < n; i++) {
      instances.push(await startServer({ extraArgs: ["--database-url", databaseUrl, ...args, ...(instanceArgs[i] || [])] }));
    }
  } catch (e) {
    for (const s of instances) await s.stop();
    throw e;
  }
  const proxy = await startProxy(instances.map((s) => s.url), { port });
  return {
    url: proxy.url,
    databaseUrl,
    proxy,
    instances,
    counters: async () => sumCounters(await Promise.all(instances.map((s) => s.counters()))),
    reset: () => Promise.all(instances.map((s) => s.reset())),
    config: (cfg) => Promise.all(instances.map((s) => s.config(cfg))),
    async stop() {
      await proxy.stop();
      for (const s of instances) await s.stop();
    },
  };
}

/**
 * Upstream mode on `n` instances behind the proxy, in front of a real OpenID Provider started
 * here (tests/oidc/provider.mjs, loaded only by the tests that call this). The proxy's port is
 * chosen first: the redirect URIs name it. `provider`: the provider's options besides its
 * redirect URIs; `args`: server flags besides the `--oidc-*` ones, `--www-dir` (the upstream
 * suite's pages) and `--revocation-sync 0.2`; `instanceArgs` as for startCluster; `timeoutMs`:
 * `--oidc-timeout-ms`. Every instance gets the client secret and one sealing key through the
 * environment (a grant sealed by one is opened by the others). The caller stops both.
 */
export async function startUpstreamCluster({
  n = 2, provider: providerOptions = {}, args = [], instanceArgs = [], timeoutMs = 5000,
} = {}) {
  const { startProvider } = await import("../oidc/provider.mjs");
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const provider = await startProvider({
    redirectUris: [`${base}/auth/callback`],
    postLogoutRedirectUris: [`${base}/app.html`],
    ...providerOptions,
  });
  process.env.TW_OIDC_CLIENT_SECRET = provider.clientSecret;
  process.env.TW_OIDC_TOKEN_KEY = randomBytes(32).toString("base64");
  try {
    const cluster = await startCluster({
      n,
      port,
      instanceArgs,
      args: [
        "--oidc-issuer", provider.issuer,
        "--oidc-client-id", provider.clientId,
        "--oidc-redirect-uri", `${base}/auth/callback`,
        "--oidc-allowed-return", `${base}/app.html`,
        "--oidc-post-logout-uri", `${base}/app.html`,
        "--oidc-timeout-ms", String(timeoutMs),
        "--www-dir", new URL("../oidc/pages", import.meta.url).pathname,
        "--revocation-sync", "0.2",
        ...args,
      ],
    });
    return { provider, cluster, base };
  } catch (e) {
    await provider.close();
    throw e;
  } finally {
    delete process.env.TW_OIDC_CLIENT_SECRET;
    delete process.env.TW_OIDC_TOKEN_KEY;
  }
}

// ---- plain HTTP clients of the refresh endpoint (no browser) --------------------------

export const COOKIE = "__Secure-tw_refresh";

/** The refresh token in a response's Set-Cookie, or null. */
export function cookieOf(res) {
  for (const line of res.headers.getSetCookie()) {
    const m = new RegExp(`^${COOKIE}=([^;]*)`).exec(line);
    if (m) return m[1] || null;
  }
  return null;
}

export async function loginAt(base, username = "demo", password = "demo") {
  return fetch(`${base}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
}

export async function refreshAt(base, token) {
  return fetch(`${base}/auth/refresh`, {
    method: "POST",
    headers: { "x-requested-with": "tokenwarden", cookie: refreshCookieHeader(token) },
  });
}

export async function meAt(base, accessToken) {
  return fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${accessToken}` } });
}

/** The `kid` in a JWT's header. */
export function kidOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split(".")[0], "base64url").toString()).kid;
}
