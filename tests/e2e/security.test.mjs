// Issue 8, security end to end, in Chromium against the reference server:
// - the access token (and the refresh cookie) never reach storage, document.cookie, the
//   console, error messages or events;
// - no Bearer header leaves for an origin outside allowedOrigins: directly, through a
//   cross-origin redirect, or to an allowed host over another scheme, port or host name;
// - refresh and logout calls always carry the CSRF header;
// - the server, driven from the page: a replayed refresh cookie revokes the family, a
//   refresh or logout without the CSRF header is 403, forged tokens are 401.
//
// The server signs with a key this file generates (--signing-key-file), so forged tokens
// can be signed properly and each one is refused for the one reason it carries.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { generateKeyPairSync, createHmac, sign as cryptoSign } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { useEnv, waitFor, sleep } from "./harness.mjs";

// ---- the server's signing key, and a stranger's ------------------------------------
const keyDir = mkdtempSync(join(tmpdir(), "tw-e2e-key-"));
const keyFile = join(keyDir, "signing.pem");
const serverKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
writeFileSync(keyFile, serverKey.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
const strangerKey = generateKeyPairSync("ec", { namedCurve: "P-256" });
after(() => rmSync(keyDir, { recursive: true, force: true }));

const env = useEnv({ serverArgs: ["--signing-key-file", keyFile] });

const b64u = (buf) => Buffer.from(buf).toString("base64url");
const json64 = (obj) => b64u(JSON.stringify(obj));
const decode = (seg) => JSON.parse(Buffer.from(seg, "base64url").toString("utf8"));
// P-256's group order: the server accepts only low-S signatures (s <= n/2), so a
// properly signed token must be in that form; node's signer gives either half the time.
const P256_N = BigInt("0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
function es256(header, claims, key) {
  const input = `${json64(header)}.${json64(claims)}`;
  const sig = cryptoSign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  const s = BigInt("0x" + sig.subarray(32).toString("hex"));
  if (s > P256_N / 2n) sig.set(Buffer.from((P256_N - s).toString(16).padStart(64, "0"), "hex"), 32);
  return `${input}.${b64u(sig)}`;
}
function hs256(header, claims, secret) {
  const input = `${json64(header)}.${json64(claims)}`;
  return `${input}.${b64u(createHmac("sha256", secret).update(input).digest())}`;
}

// ---- a second origin that records what reaches it ---------------------------------
/** A tiny HTTP server on another 127.0.0.1 port: records every request's method, path and
 *  whether it carried an Authorization header (and if so whether it was a Bearer), and
 *  answers CORS as permissively as possible, so that a leak would not be hidden by CORS. */
async function startRecorder() {
  const seen = [];
  const srv = createServer((req, res) => {
    const auth = req.headers.authorization;
    seen.push({
      method: req.method,
      path: req.url,
      auth: auth === undefined ? "none" : /^bearer /i.test(auth) ? "bearer" : "other",
      requestedHeaders: req.headers["access-control-request-headers"] || "",
    });
    const origin = req.headers.origin || "*";
    res.setHeader("Access-Control-Allow-Origin", origin);
    res.setHeader("Access-Control-Allow-Credentials", "true");
    res.setHeader("Access-Control-Allow-Headers", req.headers["access-control-request-headers"] || "*");
    res.setHeader("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS");
    res.setHeader("Access-Control-Expose-Headers", "*");
    if (req.method === "OPTIONS") { res.writeHead(204); res.end(); return; }
    req.resume();
    if (req.url.startsWith("/unauthorized")) {
      res.writeHead(401, { "WWW-Authenticate": 'Bearer error="invalid_token"' });
      res.end("{}");
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ok: true }));
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const port = srv.address().port;
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    seen,
    close: () => new Promise((r) => { srv.closeAllConnections?.(); srv.close(() => r()); }),
  };
}

let recorder;
/** Chromium (Local Network Access) refuses a page on 127.0.0.1:A a fetch to 127.0.0.1:B
 *  unless the site has this permission; without it no request would leave, and a leak
 *  could not show. A public API origin would not need it. */
const LNA = { permissions: ["local-network-access"] };
after(async () => { if (recorder) await recorder.close(); });

async function openHostile(context, options = {}) {
  const page = await context.newPage();
  await page.goto(`${env.server.url}/e2e/hostile.html?opts=${encodeURIComponent(JSON.stringify(options))}`);
  await page.waitForFunction(() => window.twReady === true || window.twError, null, { timeout: 10000 });
  const err = await page.evaluate(() => window.twError);
  if (err) throw new Error(`hostile.html failed to create the client: ${err}`);
  return page;
}

/** Every string in `haystacks` that contains one of `needles` (reported by index only). */
function leaks(label, haystacks, needles) {
  const hits = [];
  haystacks.forEach((h, i) => {
    if (typeof h === "string" && needles.some((n) => h.includes(n))) hits.push(`${label}[${i}]`);
  });
  return hits;
}

/** The secret parts of a JWT (the header segment is shared by every token: not secret). */
const needlesOf = (token) => {
  const [, payload, sig] = token.split(".");
  return [token, payload, sig].filter((s) => s && s.length >= 16);
};

// ---- tests ---------------------------------------------------------------------------

test("the access token and the refresh cookie never appear in storage, IndexedDB, the Cache API, document.cookie, the console, error messages, events, URLs or server logs", async () => {
  await env.server.config({ accessTtlSeconds: 2, leewaySeconds: 0 });
  const context = await env.newContext();
  const page = await openHostile(context, { requestTimeoutMs: 1500, retry: { maxAttempts: 20, baseDelayMs: 1000, maxDelayMs: 1000 } });
  // Test-only: keep every token the page held, to look for it afterwards.
  await page.evaluate(() => {
    window.seen = new Set();
    window.thrown = [];
    window.tw.subscribe((ev) => {
      if (ev.type === "signedIn" || ev.type === "refreshed") {
        window.tw.getToken().then((t) => { if (t) window.seen.add(t); }, () => {});
      }
    });
  });
  await page.evaluate(() => window.login());
  await page.evaluate(async () => window.seen.add(await window.tw.getToken()));
  const cookieValues = new Set();
  const grabCookie = async () => {
    for (const c of await context.cookies(env.server.url + "/auth/refresh")) if (c.name === "__Secure-tw_refresh") cookieValues.add(c.value);
  };
  await grabCookie();

  // Provoke every kind of failure the client reports: refresh faults of each kind (each
  // rejection and refreshFailed event is recorded whole), then misuse of the API with the
  // real token in the input.
  await env.server.faults([
    { kind: "status", status: 500 }, { kind: "malformed" }, { kind: "html200" },
    { kind: "missingToken" }, { kind: "expired" }, { kind: "hang" },
    { kind: "retryAfter", status: 503, retryAfterSeconds: 1 }, { kind: "empty" }, { kind: "html" },
  ]);
  for (let i = 0; i < 9; i++) {
    await page.evaluate(() => window.track("refresh", window.tw.refresh()));
    await grabCookie();
    await sleep(200);
  }
  await waitFor(async () => (await env.server.counters()).refreshRequests >= 10 && (await page.evaluate(() => window.tw.state)) === "active",
    { timeoutMs: 20000, what: "the faults used up and the session active again" });
  await page.evaluate(() => window.track("getToken", window.tw.getToken()));
  await page.evaluate(async () => {
    const token = await window.tw.getToken();
    window.seen.add(token);
    const [h, p, s] = token.split(".");
    const attempts = [
      () => window.tw.setSession({ access_token: token, token_type: "MAC", expires_in: 60 }),
      () => window.tw.setSession({ access_token: `${h}.${p}!.${s}`, token_type: "Bearer" }),
      () => window.tw.setSession({ access_token: `${h}.${p}.${s}.${s}`, token_type: "Bearer", expires_in: -5 }),
      () => window.tw.setSession({ access_token: token, expires_in: "soon" }),
      () => window.tw.setSession({ access_token: token, expires_in: 0 }),
      () => window.tw.setSession(`{"access_token":"${token}"`),
      () => window.tw.hasScope(token),
      () => window.tw.subscribe(token),
    ];
    for (const f of attempts) {
      try { f(); } catch (e) { window.thrown.push(window.dump(e)); }
    }
    await window.track("fetch-bad-url", window.tw.fetch("http://[bad-url/" + token));
    await window.track("fetch-unreachable", window.tw.fetch("http://127.0.0.1:9/unreachable"));
    await window.track("fetch-bad-init", window.tw.fetch("/api/me", { method: "GET", body: token }));
    await window.track("fetch-bad-header", window.tw.fetch("/api/me", { headers: { "X-Bad\n": token } }));
    // A second client, disposed, then used.
    const other = await window.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
    other.setSession({ access_token: token, token_type: "Bearer", expires_in: 60 });
    other.dispose();
    await window.track("disposed", other.getToken());
    await window.track("disposed", other.fetch("/api/me"));
    try {
      await window.createTokenClient({ refreshUrl: "/auth/refresh", allowedOrigins: ["http://example.com"], token });
    } catch (e) { window.thrown.push(window.dump(e)); }
  });
  assert.equal(await page.evaluate(async () => (await window.tw.fetch("/api/me")).status), 200);
  // Logout, and a refresh that the server now rejects.
  await page.evaluate(() => window.track("logout", window.tw.logout()));
  await page.evaluate(() => window.track("refresh-after-logout", window.tw.refresh()));
  await page.waitForFunction(() => window.promises.pending === 0, null, { timeout: 5000 });

  const found = await page.evaluate(async () => {
    const out = {};
    out.tokens = [...window.seen].filter(Boolean);
    out.localStorage = Object.keys(localStorage).map((k) => `${k}=${localStorage.getItem(k)}`);
    out.sessionStorage = Object.keys(sessionStorage).map((k) => `${k}=${sessionStorage.getItem(k)}`);
    out.indexedDB = (await indexedDB.databases()).map((d) => JSON.stringify(d));
    out.caches = await caches.keys();
    out.cookie = document.cookie;
    out.errors = window.promises.errors;
    out.thrown = window.thrown;
    out.events = window.eventDumps;
    out.urls = window.fetchLog.map((f) => f.url);
    out.resources = performance.getEntries().map((e) => e.name);
    out.dom = document.documentElement.outerHTML;
    out.title = document.title + location.href;
    out.codes = window.promises.byKind;
    out.unhandled = window.unhandled;
    return out;
  });
  const tokens = found.tokens;
  assert.ok(tokens.length >= 2, `only ${tokens.length} tokens seen`);
  assert.ok(cookieValues.size >= 2, "the refresh cookie did not rotate");
  const needles = [...tokens.flatMap(needlesOf), ...cookieValues];

  assert.deepEqual(found.localStorage, []);
  assert.deepEqual(found.sessionStorage, []);
  assert.deepEqual(found.indexedDB, []);
  assert.deepEqual(found.caches, []);
  assert.equal(found.cookie, "", "document.cookie is not empty");
  assert.ok(found.errors.length >= 8, `only ${found.errors.length} rejections provoked: ${JSON.stringify(found.codes)}`);
  assert.ok(found.thrown.length >= 6, `only ${found.thrown.length} throws provoked`);
  assert.ok(found.events.some((e) => e.includes("refreshFailed")), "no refreshFailed event");
  const consoleText = page.rec.console.map((m) => m.text);
  const hits = [
    ...leaks("localStorage", found.localStorage, needles),
    ...leaks("sessionStorage", found.sessionStorage, needles),
    ...leaks("document.cookie", [found.cookie], needles),
    ...leaks("console", consoleText, needles),
    ...leaks("rejection", found.errors.filter((e) => !e.includes("bad-url")), needles),
    ...leaks("throw", found.thrown, needles),
    ...leaks("event", found.events, needles),
    ...leaks("requestUrl", found.urls.filter((u) => !u.startsWith("http://[bad-url")), needles),
    ...leaks("resourceTiming", found.resources, needles),
    ...leaks("dom", [found.dom], needles),
    ...leaks("location", [found.title], needles),
    ...leaks("serverStderr", env.server.stderr, needles),
  ];
  // The test itself put the token into one URL (tw.fetch("http://[bad-url/" + token)).
  // The client's own error must not repeat it; its `cause` is the browser's TypeError for
  // the caller's own input, which quotes that input (the caller's doing, not a leak).
  const badUrl = found.errors.filter((e) => e.includes("bad-url")).map((e) => JSON.parse(e));
  assert.equal(badUrl.length, 1);
  assert.equal(badUrl[0].code, "network");
  assert.equal(badUrl[0].cause?.name, "TypeError");
  hits.push(...leaks("badUrlError", [badUrl[0].message, badUrl[0].stack, badUrl[0].code], needles));
  assert.deepEqual(hits, [], "the token or the refresh cookie leaked");
  assert.deepEqual(found.unhandled, []);
});

test("no Bearer to an origin outside allowedOrigins: another port, another host name, another scheme, a port that merely starts like an allowed one, userinfo tricks", async () => {
  recorder ||= await startRecorder();
  const A = env.server.url; // http://127.0.0.1:PORT
  const portA = new URL(A).port;
  // An allowed origin whose port is a prefix of the recorder's: a prefix match would leak.
  const prefixOrigin = `http://127.0.0.1:${String(recorder.port).slice(0, -1)}`;
  const context = await env.newContext(LNA);
  const page = await openHostile(context, { allowedOrigins: [A, prefixOrigin] });
  await page.evaluate(() => window.login());
  const targets = [
    `${recorder.origin}/direct`,
    `${recorder.origin}/direct-post`,
    `http://localhost:${portA}/api/me`,
    `https://127.0.0.1:${portA}/api/me`,
    `http://[::1]:${portA}/api/me`,
    `http://127.0.0.1.:${portA}/api/me`,
    `http://127.0.0.1:${portA}@127.0.0.1:${recorder.port}/userinfo`,
    `http://127.0.0.1:${recorder.port}/#http://127.0.0.1:${portA}/`,
    `${recorder.origin}/?next=${encodeURIComponent(A)}`,
  ];
  const results = await page.evaluate(async (targets) => {
    const out = [];
    for (const url of targets) {
      const init = url.endsWith("direct-post") ? { method: "POST", body: "x" } : undefined;
      const r = await window.track("fetch", window.tw.fetch(url, init));
      out.push({ url, ok: r.ok, status: r.ok ? r.value.status : undefined, code: r.ok ? undefined : r.code });
    }
    // Control: the allowed origin does get the Bearer.
    out.push({ url: "/api/me", status: (await window.tw.fetch("/api/me")).status });
    return out;
  }, targets);
  assert.equal(results.at(-1).status, 200, "control call to the allowed origin failed");
  // What the page handed to fetch(): no Authorization header for any other origin.
  const fetchLog = await page.evaluate(() => window.fetchLog);
  const leaked = fetchLog.filter((f) => f.auth && !f.bad && new URL(f.url).origin !== A);
  assert.deepEqual(leaked.map((f) => f.url), [], "Authorization set on a request to another origin");
  // What reached the other origins on the wire.
  assert.ok(recorder.seen.some((r) => r.path === "/direct"), `the recorder saw nothing: ${JSON.stringify(results)}`);
  assert.deepEqual(recorder.seen.filter((r) => r.auth !== "none" || /authorization/i.test(r.requestedHeaders)), []);
  const log = await env.server.log();
  const me = log.filter((e) => e.path === "/api/me");
  // localhost:A (same server, other host name) saw the request without a Bearer.
  assert.ok(me.filter((e) => e.bearer === "none").length >= 1, `localhost:${portA} did not answer: ${JSON.stringify(results)}`);
  // WHATWG URL parsing drops the empty last label of an IPv4 host ("127.0.0.1." is
  // 127.0.0.1): such a URL is the allowed origin itself and rightly gets the Bearer.
  const sameOrigin = targets.filter((u) => { try { return new URL(u).origin === A; } catch { return false; } });
  assert.deepEqual(sameOrigin, [`http://127.0.0.1.:${portA}/api/me`]);
  assert.deepEqual(me.filter((e) => e.bearer !== "none").map((e) => e.bearer), ["valid", "valid"],
    "only the control call and the same-origin spelling carried a Bearer");
});

test("no Bearer through a cross-origin redirect from an allowed URL (302 and 307, to another port and to another host name); a same-origin redirect keeps it", async () => {
  recorder ||= await startRecorder();
  const seenBefore = recorder.seen.length;
  const A = env.server.url;
  const portA = new URL(A).port;
  const context = await env.newContext(LNA);
  // Redirects served by Chromium's own network stack for URLs of the allowed origin.
  await context.route(`${A}/redirect/**`, (route) => {
    const u = new URL(route.request().url());
    const to = {
      "/redirect/other-port": `${recorder.origin}/landed-302`,
      "/redirect/other-port-307": `${recorder.origin}/landed-307`,
      "/redirect/other-host": `http://localhost:${portA}/api/me`,
      "/redirect/same-origin": `${A}/api/me`,
    }[u.pathname];
    const status = u.pathname.endsWith("307") ? 307 : 302;
    return route.fulfill({ status, headers: { Location: to }, body: "" });
  });
  const page = await openHostile(context);
  await page.evaluate(() => window.login());
  await env.server.reset();
  const results = await page.evaluate(async () => {
    const out = {};
    for (const [name, init] of [
      ["other-port", undefined], ["other-port-307", { method: "POST", body: "payload" }],
      ["other-host", undefined], ["same-origin", undefined],
    ]) {
      const r = await window.track("fetch", window.tw.fetch(`/redirect/${name}`, init));
      out[name] = r.ok ? { status: r.value.status, redirected: r.value.redirected, url: r.value.url } : { code: r.code };
    }
    return out;
  });
  // The redirects really happened in the browser.
  assert.equal(results["other-port"].redirected, true, JSON.stringify(results));
  assert.equal(results["other-port"].status, 200, JSON.stringify(results));
  assert.equal(results["same-origin"].status, 200, JSON.stringify(results));
  const landed = recorder.seen.slice(seenBefore).filter((r) => r.path.startsWith("/landed"));
  assert.ok(landed.some((r) => r.path === "/landed-302"), JSON.stringify(recorder.seen));
  assert.ok(landed.some((r) => r.path === "/landed-307"), JSON.stringify(recorder.seen));
  assert.deepEqual(landed.filter((r) => r.auth !== "none" || /authorization/i.test(r.requestedHeaders)), [], "a Bearer followed a redirect to another port");
  const me = (await env.server.log()).filter((e) => e.path === "/api/me");
  // other-host lands on the same server as localhost:A: no Bearer; same-origin: Bearer kept.
  assert.deepEqual(me.map((e) => e.bearer).sort(), ["none", "valid"], JSON.stringify(me));
});

// Contract: "On a 401 from an allowed origin to a request that carried our token: one
// refresh, then one replay". Here the 401 comes from the redirect's target, another origin,
// to a request that did not carry the token (the browser strips it on the cross-origin hop).
test("a 401 from a non-allowed origin reached through a redirect does not make the client refresh and replay", async () => {
  recorder ||= await startRecorder();
  const A = env.server.url;
  const context = await env.newContext(LNA);
  await context.route(`${A}/redirect/**`, (route) =>
    route.fulfill({ status: 302, headers: { Location: `${recorder.origin}/unauthorized` }, body: "" }));
  const page = await openHostile(context);
  await page.evaluate(() => window.login());
  await env.server.reset();
  const seenBefore = recorder.seen.filter((r) => r.path === "/unauthorized" && r.method === "GET").length;
  const status = await page.evaluate(async () => (await window.tw.fetch("/redirect/x")).status);
  assert.equal(status, 401);
  const hits = recorder.seen.filter((r) => r.path === "/unauthorized" && r.method === "GET").length - seenBefore;
  const c = await env.server.counters();
  assert.equal(c.refreshRequests, 0, "the client rotated the session because another origin said 401");
  assert.equal(hits, 1, "the request was replayed");
});

test("refresh and logout calls always carry the CSRF header: start(), the timer, refresh(), the 401 replay, retries and logout", async () => {
  await env.server.config({ accessTtlSeconds: 2, leewaySeconds: 0 });
  const context = await env.newContext();
  const page = await openHostile(context);
  await page.evaluate(() => window.login());
  await page.reload();
  await page.waitForFunction(() => window.twReady === true);
  await env.server.reset();
  assert.equal(await page.evaluate(() => window.tw.start()), true);
  await sleep(1300); // the timer's refresh at half-life
  await page.evaluate(() => window.tw.refresh());
  await env.server.faults([{ kind: "status", status: 500 }]);
  await page.evaluate(() => window.tw.refresh().catch((e) => e.code));
  await waitFor(async () => (await page.evaluate(() => window.tw.state)) === "active", { timeoutMs: 5000, what: "retry" });
  // A 401 for the current token (key rotation does not do it; a server-side forged reply
  // does): answer one /api/me with 401 in the page's network stack, so the client refreshes.
  let once = true;
  await context.route(`${env.server.url}/api/me`, (route) => {
    if (once) { once = false; return route.fulfill({ status: 401, body: "" }); }
    return route.continue();
  });
  assert.equal(await page.evaluate(async () => (await window.tw.fetch("/api/me")).status), 200);
  await page.evaluate(() => window.tw.logout());
  const log = await env.server.log();
  const calls = log.filter((e) => e.path === "/auth/refresh" || e.path === "/auth/logout");
  assert.ok(calls.filter((e) => e.path === "/auth/refresh").length >= 5, JSON.stringify(calls));
  assert.equal(calls.filter((e) => e.path === "/auth/logout").length, 1);
  assert.deepEqual(calls.filter((e) => !e.csrf), [], "a refresh or logout call without the CSRF header");
  const c = await env.server.counters();
  assert.equal(c.csrfMissing, 0);
  const pageSide = await page.evaluate(() => window.fetchLog.filter((f) => /\/auth\/(refresh|logout)$/.test(new URL(f.url).pathname)));
  assert.ok(pageSide.every((f) => f.csrf), "the page handed fetch() a refresh/logout call without the header");
});

test("server, from the browser: a replayed refresh cookie is reuse and revokes the whole family", async () => {
  const context = await env.newContext();
  const page = await openHostile(context);
  await page.evaluate(() => window.login());
  const url = env.server.url + "/auth/refresh";
  // The refresh cookie and its anchor (a hash of the token: whoever holds the token can
  // make it, so a stolen cookie replayed from the thief's browser comes with it).
  const pair = async () => {
    const jar = await context.cookies(url);
    return [jar.find((c) => c.name === "__Secure-tw_refresh"), jar.find((c) => c.name === "__Host-tw_anchor")];
  };
  const [old, oldAnchor] = await pair();
  assert.ok(old && oldAnchor);
  await page.evaluate(() => window.tw.refresh());
  const first = (await context.cookies(url)).find((c) => c.name === "__Secure-tw_refresh");
  assert.notEqual(first.value, old.value, "the cookie did not rotate");
  // The browser uses its new cookie once more: from then on the old one is outside the
  // lost-response rule (which answers a replay with the same successor only while that
  // successor has never been used).
  await sleep(1000); // the client's one-second floor between attempts
  await page.evaluate(() => window.tw.refresh());
  const [rotated, rotatedAnchor] = await pair();
  assert.notEqual(rotated.value, first.value, "the cookie did not rotate again");
  await env.server.reset();
  const liveBefore = (await env.server.counters()).liveFamilies;
  // The attacker's copy of the old cookie comes back.
  await context.addCookies([{ ...old, expires: rotated.expires }, { ...oldAnchor, expires: rotated.expires }]);
  await sleep(1000); // the client's one-second floor between attempts
  const r = await page.evaluate(() => window.tw.refresh().then(() => "ok", (e) => ({ code: e.code, status: e.status })));
  assert.deepEqual(r, { code: "refresh_rejected", status: 401 });
  assert.equal(await page.evaluate(() => window.tw.state), "signedOut");
  let c = await env.server.counters();
  assert.equal(c.reuseDetected, 1);
  assert.ok(c.familiesRevoked >= 1);
  // The legitimate, newest cookie is dead too: the family is gone.
  await context.addCookies([rotated, rotatedAnchor]);
  const status = await page.evaluate(async () => (await fetch("/auth/refresh", {
    method: "POST", credentials: "include", headers: { "X-Requested-With": "tokenwarden" },
  })).status);
  assert.equal(status, 401);
  c = await env.server.counters();
  assert.equal(c.liveFamilies, liveBefore - 1, "the family is still live");
  const events = await page.evaluate(() => window.events.map((e) => `${e.type}:${e.reason ?? ""}`));
  assert.ok(events.includes("signedOut:rejected"), JSON.stringify(events));
});

test("server, from the browser: refresh and logout without the CSRF header are 403 and leave the session alone", async () => {
  const context = await env.newContext();
  const page = await openHostile(context);
  await page.evaluate(() => window.login());
  await env.server.reset();
  const statuses = await page.evaluate(async () => {
    const post = async (path, headers = {}) => {
      const res = await fetch(path, { method: "POST", credentials: "include", headers });
      return [res.status, await res.text()];
    };
    return {
      refresh: await post("/auth/refresh"),
      logout: await post("/auth/logout"),
      otherHeader: await post("/auth/refresh", { "X-Other": "tokenwarden" }),
    };
  });
  assert.equal(statuses.refresh[0], 403);
  assert.equal(JSON.parse(statuses.refresh[1]).error, "csrf");
  assert.equal(statuses.logout[0], 403);
  assert.equal(statuses.otherHeader[0], 403);
  const c = await env.server.counters();
  assert.equal(c.csrfMissing, 3);
  assert.equal(c.familiesRevoked, 0);
  assert.equal(c.refreshesServed, 0);
  await sleep(1000);
  await page.evaluate(() => window.tw.refresh());
  assert.equal((await env.server.counters()).refreshesServed, 1, "the cookie was consumed by the forbidden calls");
});

test("server, from the browser: forged access tokens (alg none, HS256 with the public key, unknown kid, stranger's key, embedded jwk, crit, no kid, wrong aud, wrong iss, payload swap) are 401; a properly signed control is 200", async () => {
  const context = await env.newContext();
  const page = await openHostile(context);
  await page.evaluate(() => window.login());
  const real = await page.evaluate(() => window.tw.getToken());
  const [h64, p64, s64] = real.split(".");
  const header = decode(h64);
  const claims = decode(p64);
  assert.equal(header.alg, "ES256");
  const jwks = await (await fetch(env.server.url + "/.well-known/jwks.json")).text();
  const jwk = JSON.parse(jwks).keys[0];
  assert.equal(jwk.kid, header.kid, "the server does not sign with the key this test gave it");
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x, "base64url"), Buffer.from(jwk.y, "base64url")]);
  const pem = serverKey.publicKey.export({ type: "spki", format: "pem" });
  const strangerJwk = strangerKey.publicKey.export({ format: "jwk" });

  const forged = {
    "alg none, no signature": `${json64({ ...header, alg: "none" })}.${p64}.`,
    "alg none, real signature": `${json64({ ...header, alg: "none" })}.${p64}.${s64}`,
    "alg None": `${json64({ ...header, alg: "None" })}.${p64}.`,
    "HS256 keyed with the JWKS": hs256({ ...header, alg: "HS256" }, claims, jwks),
    "HS256 keyed with the public point": hs256({ ...header, alg: "HS256" }, claims, point),
    "HS256 keyed with the public PEM": hs256({ ...header, alg: "HS256" }, claims, pem),
    "HS256 keyed with the JWK x": hs256({ ...header, alg: "HS256" }, claims, Buffer.from(jwk.x, "base64url")),
    "unknown kid, real signature": `${json64({ ...header, kid: "no-such-key" })}.${p64}.${s64}`,
    "unknown kid, signed by a stranger": es256({ ...header, kid: "no-such-key" }, claims, strangerKey.privateKey),
    "server's kid, signed by a stranger": es256(header, claims, strangerKey.privateKey),
    "embedded jwk of a stranger": es256({ ...header, jwk: strangerJwk }, claims, strangerKey.privateKey),
    "jku to another origin": es256({ ...header, kid: "x", jku: "http://127.0.0.1:9/jwks.json" }, claims, strangerKey.privateKey),
    "crit header": es256({ ...header, crit: ["exp"] }, claims, serverKey.privateKey),
    "no kid": es256({ alg: "ES256", typ: "JWT" }, claims, serverKey.privateKey),
    "wrong aud (re-encoded, old signature)": `${h64}.${json64({ ...claims, aud: "someone-else" })}.${s64}`,
    "wrong aud (properly signed)": es256(header, { ...claims, aud: "someone-else" }, serverKey.privateKey),
    "no aud (properly signed)": es256(header, (({ aud, ...rest }) => rest)(claims), serverKey.privateKey),
    "wrong iss (properly signed)": es256(header, { ...claims, iss: "https://evil.example" }, serverKey.privateKey),
    "no exp (properly signed)": es256(header, (({ exp, ...rest }) => rest)(claims), serverKey.privateKey),
    "nbf in the future (properly signed)": es256(header, { ...claims, nbf: claims.iat + 3600 }, serverKey.privateKey),
    "payload swapped (sub admin)": `${h64}.${json64({ ...claims, sub: "admin" })}.${s64}`,
    "four parts": `${real}.${s64}`,
    "ES384 claimed": `${json64({ ...header, alg: "ES384" })}.${p64}.${s64}`,
  };
  const controls = {
    "the real token": real,
    "re-signed by the test with the server's key": es256(header, claims, serverKey.privateKey),
    "aud array containing ours": es256(header, { ...claims, aud: ["someone-else", claims.aud] }, serverKey.privateKey),
  };
  await env.server.reset();
  const send = (tokens) => page.evaluate(async (tokens) => {
    const out = {};
    for (const [name, t] of Object.entries(tokens)) {
      // The caller's own Authorization header: tw.fetch must pass it through untouched.
      const res = await window.tw.fetch("/api/me", { headers: { Authorization: `Bearer ${t}` } });
      out[name] = [res.status, res.headers.get("www-authenticate")];
    }
    return out;
  }, tokens);
  const got = await send(forged);
  const notRefused = Object.entries(got).filter(([, [s]]) => s !== 401).map(([n, [s]]) => `${n}: ${s}`);
  assert.deepEqual(notRefused, [], "forged tokens accepted");
  for (const [name, [, challenge]] of Object.entries(got)) {
    assert.match(challenge || "", /^Bearer error="invalid_token"/, `${name}: ${challenge}`);
  }
  const ok = await send(controls);
  assert.deepEqual(Object.fromEntries(Object.entries(ok).map(([n, [s]]) => [n, s])),
    Object.fromEntries(Object.keys(controls).map((n) => [n, 200])));
  const c = await env.server.counters();
  assert.equal(c.apiUnauthorized, Object.keys(forged).length);
  // The client did not treat the caller's 401s as its own: no refresh, no replay.
  assert.equal(c.refreshRequests, 0);
  assert.equal(c.apiCalls, Object.keys(forged).length + Object.keys(controls).length);
});

test("options whose Proxy traps throw (ownKeys, getPrototypeOf, a revoked Proxy, a nested one) reject with TokenClientError invalid_options, and the next client works", async () => {
  const context = await env.newContext();
  const page = await openHostile(context);
  const got = await page.evaluate(async () => {
    const trap = () => { throw new Error("trap"); };
    const revoked = () => { const r = Proxy.revocable({}, {}); r.revoke(); return r.proxy; };
    const cases = [
      new Proxy({}, { ownKeys: trap }),
      new Proxy({}, { getPrototypeOf: trap }),
      revoked(),
      { refreshUrl: "/auth/refresh", retry: new Proxy({}, { ownKeys: trap }) },
      { refreshUrl: "/auth/refresh", allowedOrigins: new Proxy([], { get: trap }) },
    ];
    const out = [];
    for (const c of cases) {
      try {
        (await window.createTokenClient(c)).dispose();
        out.push("created");
      } catch (e) {
        out.push(`${e.name}:${e.code}`);
      }
    }
    const next = await window.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
    out.push(next.state);
    next.dispose();
    return out;
  });
  assert.deepEqual(got, [...Array(5).fill("TokenClientError:invalid_options"), "signedOut"]);
  await context.close();
});
