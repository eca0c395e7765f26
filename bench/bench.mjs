// tokenwarden benchmark: every figure of issue 7, for tokenwarden and the
// JavaScript anchors, in one run of headless Chromium (playwright-core +
// Debian's /usr/bin/chromium). Prints a markdown table and writes
// bench/RESULTS.md. It reports figures; it never fails on timing (exit 1
// only when something could not be measured at all).
//
//   node bench/bench.mjs              (bench/run.sh builds what it needs first)
//   BENCH_QUICK=1 node bench/bench.mjs  fewer rounds, 1,000 refresh cycles (smoke run)
//   node bench/bench.mjs --report [results.json]  re-render RESULTS.md from bench/.out/results.json
//   TW_SERVER=path  reference server binary (default target/release/tokenwarden-server)
import { spawn, execSync } from "node:child_process";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { cpus } from "node:os";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";
import { brotli, bundledRow, compress, measure as measurePayload } from "../scripts/size-budget.mjs";

/** Compressed served bodies, by path (q11, as `make size` counts them). */
const brCache = new Map();

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const out = join(here, ".out");
const require = createRequire(import.meta.url);
const QUICK = !!process.env.BENCH_QUICK;
// the package under test: pkg/ as built by make pkg (TW_PKG_DIR overrides, for comparing builds)
// A copy is taken at the start, so a rebuild of pkg/ during the run cannot
// mix two builds (or serve a half-written file).
const srcPkgDir = process.env.TW_PKG_DIR ? normalize(process.env.TW_PKG_DIR) : join(root, "pkg");
const pkgDir = join(out, "pkg");
function snapshotPkg() {
  if (!existsSync(join(srcPkgDir, "tokenwarden_bg.wasm"))) throw new Error(`${srcPkgDir} has no build: run make pkg`);
  rmSync(pkgDir, { recursive: true, force: true });
  mkdirSync(pkgDir, { recursive: true });
  for (const f of readdirSync(srcPkgDir)) {
    const from = join(srcPkgDir, f);
    if (statSync(from).isFile()) copyFileSync(from, join(pkgDir, f));
  }
}

const ROUNDS = QUICK ? 5 : 21; // interleaved rounds per micro figure
const NET_ROUNDS = QUICK ? 5 : 21;
const COLD_SAMPLES = QUICK ? 5 : 21;
const CYCLES = Number(process.env.BENCH_CYCLES) || (QUICK ? 1000 : 10_000);
// BENCH_CYCLES above 10,000 runs on to it (a long check that the JS heap levels off).
// Every timed batch is sized to take at least MIN_BATCH_MS: performance.now() moves in 5 µs
// steps in a cross-origin isolated page (100 µs otherwise), so a 10 ms batch holds 2,000 steps
// (0.05 %) and the per-call figure is not a count of clock ticks.
const MIN_BATCH_MS = 10;
const CAL_TARGET_MS = 20; // calibration aims at twice the minimum, for rounds that run faster
// The memory row's "flat": JS growth over the control's under this many bytes a cycle
// (the old fixed 64 KiB was 6.6 B a cycle at 9,900 cycles, 71 B at BENCH_QUICK's 900).
const MEM_BYTES_PER_CYCLE = 7;
const CHECKPOINTS = [...new Set([100, 1000, 5000, 10_000, 20_000, CYCLES])].filter((c) => c <= CYCLES).sort((x, y) => x - y);

const log = (...a) => console.error("[bench]", ...a);

// ---------------------------------------------------------------------------
// statistics
function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { min: s[0], median, max: s[s.length - 1], n: s.length };
}
// Timing figures are printed with no digit finer than the clock resolves: `step` is the
// resolution of the figure in its own unit (the clock's step ÷ the calls in a batch), and no
// decimal below it is shown.
const f = (x, d = 2, step = 0) => {
  let dec = Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : d;
  if (step > 0) dec = Math.min(dec, Math.max(0, Math.floor(-Math.log10(step))));
  return x.toFixed(dec);
};
const mmm = (st, unit = "", d = 2) => `${f(st.median, d, st.step)}${unit} (${f(st.min, d, st.step)}–${f(st.max, d, st.step)})`;
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
// ops/s: at most 3 significant digits, fewer when the clock's step is a larger share of a batch
const kops = (x, sig = 3) => (x >= 1e6 ? `${(x / 1e6).toPrecision(sig)} M` : `${(x / 1e3).toPrecision(sig)} k`);
const kopsSt = (st) => {
  const sig = st.rel > 0 ? Math.max(1, Math.min(3, Math.floor(-Math.log10(st.rel)))) : 3;
  return `${kops(st.median, sig)} ops/s (${kops(st.min, sig)}–${kops(st.max, sig)})`;
};

// Bootstrap 95 % confidence interval of the median of per-round values (10,000 resamples of
// the rounds, with replacement; a fixed seed, so a re-render gives the same interval).
function medianCI(xs, B = 10_000, seed = 0x7e57) {
  let a = seed;
  const rnd = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const n = xs.length;
  const buf = new Float64Array(n);
  const meds = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < n; i++) buf[i] = xs[Math.floor(rnd() * n)];
    buf.sort();
    meds[b] = n % 2 ? buf[n >> 1] : (buf[n / 2 - 1] + buf[n / 2]) / 2;
  }
  meds.sort();
  return [meds[Math.floor(0.025 * B)], meds[Math.ceil(0.975 * B) - 1]];
}
/** median (min–max) of per-round values, with the bootstrap CI of the median */
const withCI = (xs) => ({ ...stats(xs), ci: medianCI(xs) });
const ciText = (st, unit = "", d = 2) => `95 % CI ${f(st.ci[0], d, st.step)}–${f(st.ci[1], d, st.step)}${unit}`;
/**
 * A target checked on the CI of a median: "met" when the whole interval is on the right
 * side, "missed" when it is all on the wrong side, otherwise the run cannot tell.
 */
function verdict(st, target, dir = "le") {
  const [lo, hi] = st.ci;
  const met = dir === "le" ? hi <= target : lo >= target;
  const missed = dir === "le" ? lo > target : hi < target;
  return met ? "met" : missed ? "missed" : "indistinguishable";
}
const VERDICT = { met: "✅ met", missed: "❌ missed", indistinguishable: "≈ indistinguishable (CI covers the target)" };
/** all met → met; any missed → missed; else indistinguishable */
const both = (...vs) => (vs.every((v) => v === "met") ? "met" : vs.includes("missed") ? "missed" : "indistinguishable");

/** Runs `fn(variant, round)` for every variant, rotating the order each round. */
async function interleave(variants, rounds, fn) {
  const res = Object.fromEntries(variants.map((v) => [v, []]));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(k + r) % variants.length];
      res[v].push(await fn(v, r));
    }
  }
  return res;
}

// ---------------------------------------------------------------------------
// CPU profile → self time by function (share of the sampled time)
function topSelf(profile, top = 12) {
  const dt = new Map();
  profile.samples.forEach((id, i) => dt.set(id, (dt.get(id) || 0) + (profile.timeDeltas[i] || 0)));
  const by = new Map();
  let total = 0;
  for (const node of profile.nodes) {
    const t = dt.get(node.id) || 0;
    const cf = node.callFrame;
    if (cf.functionName === "(idle)" || cf.functionName === "(program)" && !t) continue;
    const file = cf.url ? cf.url.replace(/^.*\//, "") : "";
    const key = `${cf.functionName || "(anonymous)"}${file ? ` ${file}` : ""}`;
    by.set(key, (by.get(key) || 0) + t);
    total += t;
  }
  return [...by.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, t]) => ({ fn, share: total ? t / total : 0 }));
}

// ---------------------------------------------------------------------------
// the token of the claims row: ES256 JWS shape, ~700 chars, 11 claims
const b64u = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
function makeJwt(jti = randomBytes(16).toString("hex"), iat = Math.floor(Date.now() / 1000)) {
  const header = { alg: "ES256", typ: "JWT", kid: "hJ8wV0n6cXlYqP3r2kRzF5bTg1mUaN4sEoD7iKjH9yQ" };
  const payload = {
    iss: "https://auth.tokenwarden.example/",
    sub: "user|5f7c8ec7c33c6c004bbafe82a1b2",
    aud: ["https://api.tokenwarden.example", "https://auth.tokenwarden.example/userinfo"],
    iat,
    nbf: iat,
    exp: iat + 3600,
    jti,
    azp: "Xq2pL8vN4mK7tR1wZ6yB3cD9",
    scope: "openid profile email read:me write:me offline_access",
    email: "ada.lovelace@tokenwarden.example",
    name: "Ada Lovelace",
  };
  return `${b64u(header)}.${b64u(payload)}.${randomBytes(64).toString("base64url")}`;
}

// ---------------------------------------------------------------------------
// esbuild bundles of the anchors: minified ESM for the browser. The same
// files are served to the page for the runtime rows.
const ANCHORS = [
  { id: "oidc-client-ts", pkgs: ["oidc-client-ts"], src: `export { UserManager } from "oidc-client-ts";` },
  {
    id: "axios",
    label: "axios + axios-auth-refresh",
    pkgs: ["axios", "axios-auth-refresh"],
    src: `export { default as axios } from "axios"; export { default as createAuthRefreshInterceptor } from "axios-auth-refresh";`,
  },
  { id: "supabase-auth-js", label: "Supabase auth-js", pkgs: ["@supabase/auth-js"], src: `export { AuthClient } from "@supabase/auth-js";` },
  { id: "okta-auth-js", label: "okta-auth-js", pkgs: ["@okta/okta-auth-js"], src: `export { OktaAuth } from "@okta/okta-auth-js";` },
  { id: "auth0-spa-js", label: "auth0-spa-js", pkgs: ["@auth0/auth0-spa-js"], src: `export { createAuth0Client } from "@auth0/auth0-spa-js";` },
  // The DPoP row's anchor (served to the page, not a size row of its own).
  { id: "auth0-spa-js-dpop", label: "auth0-spa-js (Auth0Client, DPoP row)", pkgs: ["@auth0/auth0-spa-js"], src: `export { Auth0Client } from "@auth0/auth0-spa-js";` },
  { id: "msal-browser", label: "msal-browser", pkgs: ["@azure/msal-browser"], src: `export { PublicClientApplication } from "@azure/msal-browser";` },
  { id: "jwt-decode", pkgs: ["jwt-decode"], src: `export { jwtDecode } from "jwt-decode";` },
  { id: "ky", pkgs: ["ky"], src: `export { default } from "ky";` },
];

function pkgVersion(name) {
  try {
    return JSON.parse(readFileSync(join(here, "node_modules", name, "package.json"), "utf8")).version;
  } catch {
    return null;
  }
}

async function bundleAnchors() {
  mkdirSync(join(out, "lib"), { recursive: true });
  mkdirSync(join(out, "entries"), { recursive: true });
  const sizes = {};
  for (const a of ANCHORS) {
    const missing = a.pkgs.filter((p) => !pkgVersion(p));
    if (missing.length) {
      log(`skip ${a.id}: not installed (${missing.join(", ")})`);
      sizes[a.id] = { skipped: `not installed: ${missing.join(", ")}` };
      continue;
    }
    const entry = join(out, "entries", `${a.id}.js`);
    writeFileSync(entry, a.src + "\n");
    const outfile = join(out, "lib", `${a.id}.js`);
    try {
      await esbuild.build({
        entryPoints: [entry],
        bundle: true,
        minify: true,
        format: "esm",
        platform: "browser",
        target: "es2020",
        define: { "process.env.NODE_ENV": '"production"' },
        nodePaths: [join(here, "node_modules")],
        outfile,
        logLevel: "error",
      });
      const buf = readFileSync(outfile);
      sizes[a.id] = { raw: buf.length, brotli: brotli(buf) };
    } catch (e) {
      log(`skip ${a.id}: esbuild failed: ${e.message.split("\n")[0]}`);
      sizes[a.id] = { skipped: "esbuild failed" };
    }
  }
  // tokenwarden through an app's bundler: the entry (glue and .wasm inside) bundled and
  // minified by esbuild with its defaults (ASCII output: the .wasm's characters above
  // U+007F become escapes), exactly as `make size` counts it.
  const minJs = bundledRow(pkgDir).brotli;
  return { anchors: sizes, twMinified: { js: minJs, total: minJs } };
}

// ---------------------------------------------------------------------------
// the bench's own server: pages, pkg/, the anchors, a 204 endpoint and a
// stub refresh endpoint, all on 127.0.0.1 (one origin: no CORS preflight).
const TYPES = { ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".html": "text/html" };
let refreshServed = 0;
const PRELOAD_TW = '<link rel="modulepreload" href="/pkg/index.js">';
const PRELOAD_OIDC = '<link rel="modulepreload" href="/lib/oidc-client-ts.js">';
function startServer() {
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const p = url.pathname;
    // cross-origin isolation: performance.now() at 5 µs instead of 100 µs
    res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
    res.setHeader("Cross-Origin-Embedder-Policy", "require-corp");
    const file = (dir, rel) => {
      const full = normalize(join(dir, rel));
      if (!full.startsWith(dir) || !existsSync(full)) {
        res.writeHead(404).end();
        return;
      }
      // Scripts and wasm go brotli-compressed (q11) to a browser that accepts it, as a
      // production server or CDN sends them: what crosses the (emulated) network is the
      // payload the size rows count.
      const headers = {
        "Content-Type": TYPES[extname(full)] || "application/octet-stream",
        "Cache-Control": "max-age=3600",
      };
      let body = readFileSync(full);
      if (/\.(m?js|wasm)$/.test(full) && /\bbr\b/.test(req.headers["accept-encoding"] || "")) {
        if (!brCache.has(full)) brCache.set(full, compress(body));
        body = brCache.get(full);
        headers["Content-Encoding"] = "br";
      }
      res.writeHead(200, headers);
      res.end(body);
    };
    if (p === "/204") {
      res.writeHead(204).end();
    } else if (p === "/auth/refresh" && req.method === "POST") {
      req.resume();
      refreshServed++;
      res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
      res.end(JSON.stringify({ access_token: makeJwt(String(refreshServed)), token_type: "Bearer", expires_in: 3600 }));
    } else if (p === "/" || p === "/index.html") {
      // ?preload=tw|oidc: the page's head asks for the modules (and tokenwarden's .wasm) before
      // any script runs, as README's "A faster first load" recommends; the load event waits for them.
      const head = { tw: PRELOAD_TW, oidc: PRELOAD_OIDC }[url.searchParams.get("preload")] || "";
      res.writeHead(200, { "Content-Type": "text/html" }).end(`<!doctype html><meta charset=utf-8>${head}<title>tokenwarden bench</title>`);
    } else if (p === "/bench/page.js") {
      file(here, "page.js");
    } else if (p.startsWith("/pkg/")) {
      file(pkgDir, p.slice(5));
    } else if (p.startsWith("/lib/")) {
      file(join(out, "lib"), p.slice(5));
    } else {
      res.writeHead(404).end();
    }
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// ---------------------------------------------------------------------------
// the reference server (for the /api/me row)
async function startRefServer() {
  const bin = process.env.TW_SERVER || join(root, "target/release/tokenwarden-server");
  if (!existsSync(bin)) {
    log(`reference server not built (${bin}); skipping its row`);
    return null;
  }
  const child = spawn(bin, ["--port", "0", "--test-mode", "--memory-store", "--pkg-dir", pkgDir], {
    cwd: root,
    env: { ...process.env, TW_LOG: "error" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let buf = "";
  const base = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("reference server did not start in 20 s")), 20_000);
    child.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`reference server exited (${code})`)));
  });
  child.stdout.resume();
  return { child, base };
}

// ---------------------------------------------------------------------------
const LAUNCH = {
  executablePath: process.env.CHROME || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
};

async function main() {
  const t0 = Date.now();
  const loadStart = (await import("node:os")).loadavg();
  // retry while a concurrent `make pkg` is writing the files
  for (let i = 0; ; i++) {
    snapshotPkg();
    if (WebAssembly.validate(readFileSync(join(pkgDir, "tokenwarden_bg.wasm")))) break;
    if (i === 15) throw new Error("pkg/tokenwarden_bg.wasm is not a valid wasm module");
    log("pkg/ is being rebuilt; waiting");
    await new Promise((r) => setTimeout(r, 2000));
  }
  // What the run was, recorded now: `--report` renders from these, never from the machine
  // it happens to run on later.
  const R = {
    schema: 2,
    notes: [],
    pkgSource: srcPkgDir === join(root, "pkg") ? "pkg/" : srcPkgDir,
    meta: {
      date: new Date(t0).toISOString(),
      machine: machine(),
      node: process.version,
      versions: Object.fromEntries(["playwright-core", "esbuild", ...new Set(ANCHORS.flatMap((a) => a.pkgs))].map((p) => [p, pkgVersion(p)])),
      quick: QUICK,
      rounds: ROUNDS,
      netRounds: NET_ROUNDS,
      coldSamples: COLD_SAMPLES,
      cycles: CYCLES,
      minBatchMs: MIN_BATCH_MS,
      anchors: ANCHORS.map(({ id, label, src }) => ({ id, label, src })),
    },
  };

  log("sizes (esbuild + brotli q11)");
  R.payload = measurePayload(pkgDir);
  // The size floor, built by bench/floor.sh (bench/run.sh runs it first).
  const floorFile = join(root, "target", "floor", "floor.json");
  R.sizeFloor = existsSync(floorFile) ? JSON.parse(readFileSync(floorFile, "utf8")) : null;
  Object.assign(R, await bundleAnchors());

  const token = makeJwt();
  const tokenResponse = { access_token: token, token_type: "Bearer", expires_in: 3600 };
  R.token = { length: token.length, claims: Object.keys(JSON.parse(Buffer.from(token.split(".")[1], "base64url"))).length };

  const server = await startServer();
  const base = `http://127.0.0.1:${server.address().port}`;
  const ref = await startRefServer().catch((e) => {
    log(String(e.message));
    return null;
  });
  const browser = await chromium.launch(LAUNCH);
  R.chromium = browser.version();
  try {
    // ---------------- micro figures, one page ----------------
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on("pageerror", (e) => log("page error:", e.message));
    await page.goto(base + "/");
    const setup = await page.evaluate(async (c) => {
      window.B = await import("/bench/page.js");
      return window.B.setup(c);
    }, { token, tokenResponse });
    R.isolated = setup.crossOriginIsolated;
    R.clockStepMs = setup.clockStepMs;
    R.headerCheck = setup.headerCheck;
    R.tokenReadSetup = setup.tokenRead;
    log("setup", JSON.stringify(setup));
    const stepMs = setup.clockStepMs;

    const FETCH_V = ["raw", "minimal", "axios", "ky", "tokenwarden"];
    // Per variant, the batch size is calibrated first (these batches are the warm-up): n
    // grows until one batch takes CAL_TARGET_MS, so that every timed batch takes
    // MIN_BATCH_MS or more. Returns µs per op by round, with the batch sizes and times.
    R.batches = {};
    const perCall = async (fn, variants, n0, rounds, figure) => {
      const ns = {};
      for (const v of variants) {
        // done when two batches in a row (the first is the warm-up) take CAL_TARGET_MS
        let n = n0;
        let ok = 0;
        for (let i = 0; i < 30 && ok < 2; i++) {
          const ms = await page.evaluate(fn, [v, n]);
          if (ms >= CAL_TARGET_MS) ok++;
          else {
            ok = 0;
            n = Math.ceil(n * Math.min(50, Math.max(1.5, (1.2 * CAL_TARGET_MS) / Math.max(ms, stepMs))));
          }
        }
        ns[v] = n;
      }
      const ms = await interleave(variants, rounds, (v) => page.evaluate(fn, [v, ns[v]]));
      R.batches[figure] = Object.fromEntries(variants.map((v) => [v, { n: ns[v], ms: stats(ms[v]) }]));
      const short = variants.filter((v) => Math.min(...ms[v]) < MIN_BATCH_MS);
      if (short.length) log(`${figure}: a batch under ${MIN_BATCH_MS} ms for ${short.join(", ")}`);
      return Object.fromEntries(variants.map((v) => [v, ms[v].map((x) => (x * 1000) / ns[v])])); // µs per op
    };
    // per-op figures keep their resolution: the clock step ÷ the batch's calls (µs), and the
    // step's share of the shortest batch
    const timed = (figure, v, xs) => {
      const b = R.batches[figure][v];
      return { ...withCI(xs), step: (stepMs * 1000) / b.n, rel: stepMs / b.ms.min };
    };

    log("client.fetch over a stubbed fetch");
    const DIAG_V = ["diag: fetch(new Request(url))", "diag: new Request + set header + clone"];
    const stub = await perCall(([v, n]) => window.B.runFetch(v, n, true), [...FETCH_V, ...DIAG_V], 2000, ROUNDS, "stubFetch");
    R.stubFetch = {};
    for (const v of [...FETCH_V, ...DIAG_V]) {
      const perCallSt = timed("stubFetch", v, stub[v]);
      const step = Math.max(perCallSt.step, R.batches.stubFetch.raw.n ? (stepMs * 1000) / R.batches.stubFetch.raw.n : 0);
      R.stubFetch[v] = { perCall: perCallSt, overhead: { ...withCI(stub[v].map((x, i) => x - stub.raw[i])), step } };
    }
    // tokenwarden's overhead ÷ the minimal wrapper's, round by round (the "≤ 2×" target)
    R.stubFetch.tokenwarden.overMinimal = withCI(stub.tokenwarden.map((x, i) => (x - stub.raw[i]) / (stub.minimal[i] - stub.raw[i])));

    // DPoP (issue 15): the cost of a proof per client.fetch, next to
    // auth0-spa-js's createFetcher with useDpop, over the same stubbed fetch.
    log("DPoP: a proof per fetch (stubbed fetch)");
    R.dpopSetup = await page.evaluate(() => window.B.setupDpop());
    log("dpop setup", JSON.stringify(R.dpopSetup));
    {
      const DPOP_V = ["raw", "tokenwarden", "tokenwarden dpop"];
      const a0 = R.dpopSetup["auth0-spa-js createFetcher useDpop"];
      if (a0 && a0.proof) DPOP_V.push("auth0-spa-js createFetcher useDpop");
      const dp = await perCall(([v, n]) => window.B.runFetch(v, n, true), DPOP_V, QUICK ? 100 : 300, ROUNDS, "dpop");
      R.dpop = {};
      const rawStep = (stepMs * 1000) / R.batches.dpop.raw.n;
      for (const v of DPOP_V) {
        const perCallSt = timed("dpop", v, dp[v]);
        // the whole wrapper's cost over raw fetch: the like-for-like figure for both libraries
        R.dpop[v] = { perCall: perCallSt, overhead: { ...withCI(dp[v].map((x, i) => x - dp.raw[i])), step: Math.max(perCallSt.step, rawStep) } };
      }
      // the proof alone (DPoP client.fetch − plain client.fetch): tokenwarden only
      R.dpop.proofOnly = { ...withCI(dp["tokenwarden dpop"].map((x, i) => x - dp.tokenwarden[i])), step: R.dpop["tokenwarden dpop"].overhead.step };
      if (dp["auth0-spa-js createFetcher useDpop"]) {
        const a0 = dp["auth0-spa-js createFetcher useDpop"];
        R.dpop.twOverA0 = withCI(dp["tokenwarden dpop"].map((x, i) => (x - dp.raw[i]) / (a0[i] - dp.raw[i])));
      }
    }

    // Where the time goes: a CPU profile of tokenwarden's hot paths (self
    // time by function, sampled every 50 µs). Diagnostic only.
    log("CPU profile of client.fetch (stubbed) and getToken()");
    {
      const cdp = await ctx.newCDPSession(page);
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.setSamplingInterval", { interval: 50 });
      R.profile = {};
      for (const [name, fn, n] of [
        ["client.fetch (stubbed fetch)", ([n]) => window.B.runFetch("tokenwarden", n, true), QUICK ? 5000 : 20000],
        ["getToken()", ([n]) => window.B.runGetToken("tokenwarden", n), QUICK ? 20000 : 100000],
      ]) {
        await cdp.send("Profiler.start");
        await page.evaluate(fn, [n]);
        const { profile } = await cdp.send("Profiler.stop");
        R.profile[name] = topSelf(profile);
      }
      await cdp.detach();
    }

    log("fetch to a 204 endpoint on 127.0.0.1");
    const netN = QUICK ? 100 : 200;
    const NET_V = [...FETCH_V, "diag: new Request + set header + clone"];
    const net = await perCall(([v, n]) => window.B.runFetch(v, n, false), NET_V, netN, NET_ROUNDS, "netFetch");
    R.netFetch = {};
    for (const v of NET_V) {
      R.netFetch[v] = { perCall: timed("netFetch", v, net[v]), ratio: withCI(net[v].map((x, i) => x / net.raw[i])) };
    }

    // Token read: tokenwarden's getToken() next to what an app awaits with the libraries
    // used instead, each holding a valid token (page.js setupTokenReaders), measured alike.
    log("getToken() and the token-read anchors");
    const GT_V = ["floor", "tokenwarden", ...["auth0-spa-js getTokenSilently", "oidc-client-ts getUser"].filter((v) => setup.tokenRead[v] === true)];
    const gt = await perCall(([v, n]) => window.B.runGetToken(v, n), GT_V, 5000, ROUNDS, "getToken");
    R.getToken = Object.fromEntries(GT_V.map((v) => [v, timed("getToken", v, gt[v])]));

    log("claims decode");
    const CL_V = ["tw-cached", "tw-fresh", "tw-setSession", "jwt-decode", "minimal", "minimal-memo"];
    const cl = await perCall(([v, n]) => window.B.runClaims(v, n), CL_V, 2000, ROUNDS, "claims");
    R.claimsUs = Object.fromEntries(CL_V.map((v) => [v, timed("claims", v, cl[v])]));
    R.claims = Object.fromEntries(CL_V.map((v) => [v, { ...stats(cl[v].map((us) => 1e6 / us)), rel: R.claimsUs[v].rel }])); // ops/s
    // like for like, round by round: a per-token cache against a per-token cache, a new
    // token against a full decode (ops/s ratio; ≥ 1 means tokenwarden is as fast or faster)
    R.claimsVs = {
      cached: withCI(cl["minimal-memo"].map((x, i) => x / cl["tw-cached"][i])),
      fresh: withCI(cl.minimal.map((x, i) => x / cl["tw-fresh"][i])),
    };
    await ctx.close();

    // ---------------- cold start ----------------
    log("cold start");
    const coldFn = async (subject) => {
      const t0 = performance.now();
      if (subject === "oidc-client-ts") {
        // anchor: import the oidc-client-ts bundle and construct a UserManager
        const m = await import("/lib/oidc-client-ts.js");
        const t1 = performance.now();
        const um = new m.UserManager({ authority: location.origin, client_id: "bench", redirect_uri: location.origin + "/", automaticSilentRenew: false });
        const t3 = performance.now();
        void um;
        return { total: t3 - t0, entry: t1 - t0, init: 0, construct: t3 - t1, wasmFetch: 0 };
      }
      const m = await import("/pkg/index.js");
      const t1 = performance.now();
      await m.init();
      const t2 = performance.now();
      // the default options (crossTab on: joins its BroadcastChannel at construction); the
      // extra "crossTab: false" subject shows what that costs
      const tw = await m.createTokenClient(subject === "tokenwarden crossTab:false" ? { refreshUrl: "/auth/refresh", crossTab: false } : { refreshUrl: "/auth/refresh" });
      const t3 = performance.now();
      tw.dispose();
      const wasm = performance.getEntriesByType("resource").find((e) => e.name.endsWith(".wasm"));
      return { total: t3 - t0, entry: t1 - t0, init: t2 - t1, construct: t3 - t2, wasmFetch: wasm ? wasm.duration : null };
    };
    const warmCtx = await browser.newContext();
    { // prime the repeat-visit context's HTTP cache (tokenwarden compiles its .wasm from bytes
      // inside the entry, so V8's wasm code cache, which serves streaming compiles, does not apply)
      for (let i = 0; i < 3; i++) {
        const p = await warmCtx.newPage();
        await p.goto(base + "/");
        await p.evaluate(coldFn, "tokenwarden");
        await p.evaluate(coldFn, "oidc-client-ts");
        await p.close();
      }
    }
    // "preloaded": a first visit (new context) whose page head preloads the modules.
    // "rtt40": a first visit over an emulated network (40 ms round trips, 10 Mbit/s each
    // way, Chrome's own throttling through CDP): where loopback hides what a round trip
    // costs.
    // "first crossTab:false": a first visit with the BroadcastChannel off (an extra row).
    const COLD_V = ["first", "repeat", "preloaded", "rtt40", "first oidc-client-ts", "repeat oidc-client-ts", "preloaded oidc-client-ts", "rtt40 oidc-client-ts", "first crossTab:false"];
    const cold = await interleave(COLD_V, COLD_SAMPLES, async (v) => {
      const first = !v.startsWith("repeat");
      const oidc = v.endsWith("oidc-client-ts");
      const subject = oidc ? "oidc-client-ts" : v.endsWith("crossTab:false") ? "tokenwarden crossTab:false" : "tokenwarden";
      const c = first ? await browser.newContext() : warmCtx;
      const p = await c.newPage();
      if (v.startsWith("rtt40")) {
        const cdp = await c.newCDPSession(p);
        await cdp.send("Network.enable");
        await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 40, downloadThroughput: 1_250_000, uploadThroughput: 1_250_000 });
      }
      await p.goto(base + "/" + (v.startsWith("preloaded") ? `?preload=${oidc ? "oidc" : "tw"}` : ""));
      const r = await p.evaluate(coldFn, subject);
      await p.close();
      if (first) await c.close();
      return r;
    });
    await warmCtx.close();
    R.cold = {};
    for (const v of COLD_V) {
      // one sample is one page: its resolution is the clock's step
      R.cold[v] = Object.fromEntries(["total", "entry", "init", "construct", "wasmFetch"].map((k) => [k, { ...stats(cold[v].map((x) => x[k] ?? 0)), step: stepMs }]));
      const o = cold[`${v.replace(" crossTab:false", "")} oidc-client-ts`];
      // tokenwarden ÷ oidc-client-ts, sample by sample (the same round of the interleave)
      if (o) R.cold[v].vsOidc = withCI(cold[v].map((x, i) => x.total / o[i].total));
    }

    // ---------------- memory over refresh cycles ----------------
    // tokenwarden, then a control (a plain JS refresher doing the same
    // fetch + JSON + timer work) in a fresh context, so that the harness's
    // own drift (fake clock, CDP) can be told apart from the client's.
    log(`memory over ${CYCLES} refresh cycles (fake clock)`);
    R.memory = {};
    for (const subject of ["tokenwarden", "control"]) {
      const mctx = await browser.newContext();
      const mp = await mctx.newPage();
      mp.on("pageerror", (e) => log("page error:", e.message));
      await mp.clock.install();
      await mp.goto(base + "/");
      const cdp = await mctx.newCDPSession(mp);
      await mp.evaluate(async ([subject, resp]) => {
        window.events = 0;
        if (subject === "tokenwarden") {
          const { createTokenClient } = await import("/pkg/index.js");
          const tw = await createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
          // init() resolves with the glue, whose default() gives the instance's exports.
          window.wasm = await (await (await import("/pkg/index.js")).init()).default();
          tw.subscribe(() => window.events++);
          tw.setSession(resp);
          window.refreshOnce = () => tw.refresh();
        } else {
          let token, timer;
          window.refreshOnce = async () => {
            const r = await fetch("/auth/refresh", { method: "POST", headers: { "X-Requested-With": "tokenwarden" } });
            const j = await r.json();
            token = j.access_token;
            clearTimeout(timer);
            timer = setTimeout(() => {}, (j.expires_in - 30) * 1000);
            window.events++;
            return token;
          };
        }
        // The loop runs in the page: the fake clock's own controller advances
        // 1.1 s before each refresh (page.clock.runFor() from Node would add
        // one init script to the context per call, and a CDP round trip).
        const clock = globalThis.__pwClock && globalThis.__pwClock.controller;
        window.cycles = async (n) => {
          for (let i = 0; i < n; i++) {
            await clock.runFor(1100); // the client refreshes at most once a second
            await window.refreshOnce();
          }
        };
        if (!clock) throw new Error("playwright's page clock controller not found");
      }, [subject, tokenResponse]);
      const snap = async (cycle) => {
        for (let i = 0; i < 3; i++) await cdp.send("HeapProfiler.collectGarbage");
        const heap = await cdp.send("Runtime.getHeapUsage");
        const w = await mp.evaluate(() =>
          window.wasm ? [window.wasm.memory.buffer.byteLength, window.wasm.__wbindgen_externrefs?.length ?? null] : [null, null],
        );
        return { cycle, wasmBytes: w[0], externrefs: w[1], jsHeap: heap.usedSize };
      };
      // Heap snapshots at 1,000 cycles and at the end, diffed by constructor:
      // tells a leak of the client's objects from V8's own growth (JIT and
      // wasm tier-up code). BENCH_HEAPDIFF=0 skips it.
      const heapCounts = async () => {
        let chunks = [];
        const onChunk = (e) => chunks.push(e.chunk);
        cdp.on("HeapProfiler.addHeapSnapshotChunk", onChunk);
        await cdp.send("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
        cdp.off("HeapProfiler.addHeapSnapshotChunk", onChunk);
        const snap = JSON.parse(chunks.join(""));
        chunks = null;
        const meta = snap.snapshot.meta;
        const nf = meta.node_fields.length;
        const iType = meta.node_fields.indexOf("type");
        const iName = meta.node_fields.indexOf("name");
        const iSize = meta.node_fields.indexOf("self_size");
        const types = meta.node_types[iType];
        const counts = new Map();
        for (let i = 0; i < snap.nodes.length; i += nf) {
          const key = `${types[snap.nodes[i + iType]]}:${String(snap.strings[snap.nodes[i + iName]]).slice(0, 60)}`;
          const c = counts.get(key) || [0, 0];
          c[0]++;
          c[1] += snap.nodes[i + iSize];
          counts.set(key, c);
        }
        return counts;
      };
      const snapshots = process.env.BENCH_HEAPDIFF !== "0";
      const heapDiff = snapshots && subject === "tokenwarden";
      let heapAt1000, heapAt100;
      const snaps = [await snap(0)];
      const before = refreshServed;
      const tm = Date.now();
      let done = 0;
      for (const cp of CHECKPOINTS) {
        await mp.evaluate((n) => window.cycles(n), cp - done);
        done = cp;
        snaps.push(await snap(cp));
        if (heapDiff && cp === 1000) heapAt1000 = await heapCounts();
        if (snapshots && cp === 100) heapAt100 = await heapCounts();
      }
      // Growth from cycle 100 to the end by kind of heap node: `code` is V8's
      // own (bytecode, JIT code, feedback vectors: grows while hot functions
      // are compiled, bounded by the code there is), `native` is outside the
      // JS heap figure, the rest is objects the page holds.
      const end = snapshots ? await heapCounts() : null;
      let kinds = null;
      if (heapAt100) {
        kinds = { data: 0, code: 0, native: 0 };
        for (const k of new Set([...end.keys(), ...heapAt100.keys()])) {
          const type = k.slice(0, k.indexOf(":"));
          const kind = type === "code" ? "code" : type === "native" || type === "synthetic" ? "native" : "data";
          kinds[kind] += (end.get(k)?.[1] || 0) - (heapAt100.get(k)?.[1] || 0);
        }
        log(`${subject}: heap snapshot growth from cycle 100 to the end: objects ${kinds.data} B, V8 code ${kinds.code} B, native ${kinds.native} B`);
      }
      if (heapDiff && heapAt1000) {
        const diff = [...end.entries()]
          .map(([k, [n, b]]) => [k, n - (heapAt1000.get(k)?.[0] || 0), b - (heapAt1000.get(k)?.[1] || 0)])
          .filter(([, n, b]) => n || b)
          .sort((x, y) => y[2] - x[2])
          .slice(0, 12);
        R.heapDiff = diff;
        log("heap growth from cycle 1,000 to the end, by constructor (count, bytes):");
        for (const [k, n, b] of diff) log(`  ${k}  ${n}  ${b}`);
      }
      const events = await mp.evaluate(() => window.events);
      R.memory[subject] = { snaps, kinds, served: refreshServed - before, events, seconds: (Date.now() - tm) / 1000 };
      await mctx.close();
    }

    // ---------------- reference server: /api/me ----------------
    if (ref) {
      log("client.fetch vs raw fetch to the reference server's /api/me");
      const rctx = await browser.newContext();
      const rp = await rctx.newPage();
      await rp.goto(ref.base + "/favicon.svg"); // any same-origin document (not the demo page)
      await rp.evaluate(async () => {
        const post = (u, body) => fetch(u, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        await post("/test/config", { accessTtlSeconds: 3600 });
        const resp = await (await post("/auth/login", { username: "demo", password: "demo" })).json();
        const { createTokenClient } = await import("/pkg/index.js");
        const tw = await createTokenClient({ refreshUrl: "/auth/refresh" });
        tw.setSession(resp);
        const auth = "Bearer " + resp.access_token;
        const F = {
          raw: () => fetch("/api/me", { headers: { Authorization: auth } }),
          tokenwarden: () => tw.fetch("/api/me"),
        };
        window.refRun = async (v, n) => {
          const t0 = performance.now();
          for (let i = 0; i < n; i++) {
            const r = await F[v]();
            if (r.status !== 200) throw new Error(`/api/me answered ${r.status}`);
            await r.arrayBuffer();
          }
          return performance.now() - t0;
        };
      });
      const n = QUICK ? 50 : 100;
      await interleave(["raw", "tokenwarden"], 1, (v) => rp.evaluate(([v, n]) => window.refRun(v, n), [v, 20]));
      const rr = await interleave(["raw", "tokenwarden"], NET_ROUNDS, (v) => rp.evaluate(([v, n]) => window.refRun(v, n), [v, n]));
      const step = (R.clockStepMs * 1000) / n;
      R.refApi = {
        raw: { ...stats(rr.raw.map((x) => (x * 1000) / n)), step },
        tokenwarden: { ...stats(rr.tokenwarden.map((x) => (x * 1000) / n)), step },
        ratio: withCI(rr.tokenwarden.map((x, i) => x / rr.raw[i])),
        batchMs: stats([...rr.raw, ...rr.tokenwarden]),
      };
      await rctx.close();
    }
  } finally {
    await browser.close();
    server.close();
    if (ref) ref.child.kill();
  }
  R.seconds = (Date.now() - t0) / 1000;
  R.load = { start: loadStart, end: (await import("node:os")).loadavg() };
  const md = report(R);
  console.log(md);
  writeFileSync(join(here, "RESULTS.md"), md);
  writeFileSync(join(out, "results.json"), JSON.stringify(R, null, 2));
  log(`wrote bench/RESULTS.md (${R.seconds.toFixed(0)} s)`);
}

// ---------------------------------------------------------------------------
function machine() {
  let model = "unknown";
  try {
    model = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)[1].trim();
  } catch {}
  let nproc = cpus().length;
  try {
    nproc = Number(execSync("nproc").toString().trim());
  } catch {}
  return { model, nproc };
}

/** the shortest timed batch of the run (ms), over every in-page figure */
function minBatch(R) {
  return Math.min(...Object.values(R.batches).flatMap((fig) => Object.values(fig).map((b) => b.ms.min)), R.refApi ? R.refApi.batchMs.min : Infinity);
}

function report(R) {
  const yes = (ok) => (ok ? "✅ met" : "❌ missed");
  const rows = [];
  const M = R.meta;
  const m = M.machine;
  const anchorSize = M.anchors.filter((a) => a.id !== "jwt-decode" && a.id !== "ky")
    .map((a) => `${a.label || a.id} ${R.anchors[a.id].skipped ? "(skipped)" : kib(R.anchors[a.id].brotli)}`)
    .join(", ");
  const pay = R.payload.total.brotli;
  rows.push([
    "npm payload a browser downloads (one file: the entry with the glue and the .wasm inside, brotli q11)",
    `**${kib(pay)}** (${pay} B; the wasm alone, as a file: ${kib(R.payload.shown[0].brotli)}; the size floor, the policy alone: ${R.sizeFloor ? kib(R.sizeFloor.brotli) : "not measured"})`,
    anchorSize,
    "≤ 20 KiB = 20,480 B (stretch 15 KiB = 15,360 B; issue 14)",
    yes(pay <= 20 * 1024) + (pay <= 15 * 1024 ? " (stretch too)" : ""),
  ]);
  const sf = R.stubFetch;
  const twO = sf.tokenwarden.overhead;
  const overMin = sf.tokenwarden.overMinimal;
  const stubVerdict = both(verdict(overMin, 2), verdict(twO, 10));
  rows.push([
    "`client.fetch` overhead per call over a stubbed fetch (µs, median (min–max))",
    `**${mmm(twO, " µs")}** (${ciText(twO, " µs")}) = ${f(overMin.median)}× minimal (${ciText(overMin, "×")})`,
    `minimal JS wrapper ${mmm(sf.minimal.overhead, " µs")}; axios + interceptor + axios-auth-refresh (fetch adapter) ${mmm(sf.axios.overhead, " µs")}; ky + beforeRequest hook ${mmm(sf.ky.overhead, " µs")} (stubbed fetch itself ${f(sf.raw.perCall.median, 2, sf.raw.perCall.step)} µs/call)`,
    "≤ 2× minimal and ≤ 10 µs (on the 95 % CI of the median)",
    `${VERDICT[stubVerdict]} (2×: ${verdict(overMin, 2)}; 10 µs: ${verdict(twO, 10)})`,
  ]);
  if (R.dpop) {
    const a0 = R.dpop["auth0-spa-js createFetcher useDpop"];
    const twd = R.dpop["tokenwarden dpop"];
    rows.push([
      "DPoP: a `client.fetch` with a fresh proof, overhead over raw `fetch` (stubbed fetch; µs, median (min–max))",
      `**${mmm(twd.overhead, " µs")}** over raw (${ciText(twd.overhead, " µs")}; the same client.fetch without DPoP: ${mmm(R.dpop.tokenwarden.overhead, " µs")}; proof alone, DPoP fetch − plain client.fetch: ${mmm(R.dpop.proofOnly, " µs")})`,
      a0
        ? `auth0-spa-js \`createFetcher\` with \`useDpop\`: ${mmm(a0.overhead, " µs")} over raw (${ciText(a0.overhead, " µs")}); tokenwarden ÷ auth0, round by round: ${f(R.dpop.twOverA0.median)}× (${ciText(R.dpop.twOverA0, "×")})`
        : `auth0-spa-js: not measured (${JSON.stringify(R.dpopSetup["auth0-spa-js createFetcher useDpop"] || R.dpopSetup.auth0Error)})`,
      "—",
      "—",
    ]);
  }
  const nf = R.netFetch;
  rows.push([
    "`client.fetch` vs raw `fetch`, 204 endpoint on 127.0.0.1, interleaved rounds (time ratio, median (min–max))",
    `**${mmm(nf.tokenwarden.ratio, "×")}** (${ciText(nf.tokenwarden.ratio, "×")}; ${f(nf.tokenwarden.perCall.median, 2, nf.tokenwarden.perCall.step)} µs/request vs raw ${f(nf.raw.perCall.median, 2, nf.raw.perCall.step)} µs; the stubbed-fetch overhead alone would make it ${(1 + twO.median / nf.raw.perCall.median).toFixed(3)}×)`,
    `minimal ${mmm(nf.minimal.ratio, "×")} (${ciText(nf.minimal.ratio, "×")}); axios ${mmm(nf.axios.ratio, "×")}; ky ${mmm(nf.ky.ratio, "×")}`,
    "≤ 1.05× (on the 95 % CI of the median)",
    VERDICT[verdict(nf.tokenwarden.ratio, 1.05)],
  ]);
  if (R.refApi) {
    rows.push([
      "(extra) `client.fetch` vs raw `fetch` to the reference server's `/api/me` (ES256 verified, 200 JSON read)",
      `**${mmm(R.refApi.ratio, "×")}** (${ciText(R.refApi.ratio, "×")}; ${f(R.refApi.tokenwarden.median, 2, R.refApi.tokenwarden.step)} vs ${f(R.refApi.raw.median, 2, R.refApi.raw.step)} µs/request)`,
      "raw fetch with the header set by hand = 1.00×",
      "(≤ 1.05×)",
      VERDICT[verdict(R.refApi.ratio, 1.05)],
    ]);
  }
  const gt = R.getToken;
  const gtAnchors = [
    gt["auth0-spa-js getTokenSilently"] ? `auth0-spa-js \`getTokenSilently()\`, token in its in-memory cache ${mmm(gt["auth0-spa-js getTokenSilently"], " µs")}` : `auth0-spa-js: not measured (${JSON.stringify(R.tokenReadSetup["auth0-spa-js getTokenSilently"])})`,
    gt["oidc-client-ts getUser"] ? `oidc-client-ts \`(await userManager.getUser()).access_token\`, user in its default store (sessionStorage) ${mmm(gt["oidc-client-ts getUser"], " µs")}` : `oidc-client-ts: not measured (${JSON.stringify(R.tokenReadSetup["oidc-client-ts getUser"])})`,
    `floor: awaiting an async function returning a string ${mmm(gt.floor, " µs", 3)}`,
  ];
  rows.push([
    "token read: `getToken()` on a token that is not due, await included (µs per call)",
    `**${mmm(gt.tokenwarden, " µs")}** (${ciText(gt.tokenwarden, " µs")})`,
    gtAnchors.join("; "),
    "≤ 2 µs median (on the 95 % CI)",
    VERDICT[verdict(gt.tokenwarden, 2)],
  ]);
  const c = R.claims;
  rows.push([
    `claims decode, ${R.token.length}-char ES256 token with ${R.token.claims} claims: \`claims()\` after \`setSession\` (cached per token)`,
    `**${kopsSt(c["tw-cached"])}**`,
    `minimal JS memoised per token (returns the last object while the token is unchanged) ${kopsSt(c["minimal-memo"])}; tokenwarden's ops/s ÷ the memoised decoder's, round by round: ${f(R.claimsVs.cached.median)}×`,
    "≥ memoised minimal JS (on the 95 % CI of the per-round ratio)",
    VERDICT[verdict(R.claimsVs.cached, 1, "ge")] + ` (${ciText(R.claimsVs.cached, "×")}, tokenwarden's ops/s ÷ the anchor's)`,
  ]);
  rows.push([
    "claims decode of a new token: `setSession(response)` + `claims()`",
    `**${kopsSt(c["tw-fresh"])}** (setSession alone ${kopsSt(c["tw-setSession"])})`,
    `minimal JS, a full decode every call (atob + JSON.parse) ${kopsSt(c.minimal)}; jwt-decode ${kopsSt(c["jwt-decode"])}`,
    "≥ minimal JS, full decode (on the 95 % CI of the per-round ratio)",
    VERDICT[verdict(R.claimsVs.fresh, 1, "ge")] + ` (${f(R.claimsVs.fresh.median)}×, ${ciText(R.claimsVs.fresh, "×")})`,
  ]);
  const coldRows = [
    ["first", "first visit: new browser context, nothing cached"],
    ["repeat", "repeat visit: HTTP cache warm (the .wasm is compiled from the entry's bytes on every load: no wasm code cache)"],
    ["preloaded", "first visit, the page's head preloading the module"],
    ["rtt40", "first visit over an emulated network (40 ms round trips, 10 Mbit/s)"],
    ["first crossTab:false", "(extra) first visit, `crossTab: false` (no BroadcastChannel joined)"],
  ].filter(([v]) => R.cold[v]);
  for (const [v, label] of coldRows) {
    const x = R.cold[v];
    const o = R.cold[`${v.replace(" crossTab:false", "")} oidc-client-ts`];
    rows.push([
      `cold start: import → \`createTokenClient()\` ready${v.endsWith("crossTab:false") ? "" : " (default options: crossTab on)"}, fresh page each sample, ${label} (ms)`,
      `**${mmm(x.total, " ms")}** (entry import ${f(x.entry.median, 2, x.entry.step)}, wasm compile+instantiate ${f(x.init.median, 2, x.init.step)}, construct ${f(x.construct.median, 3, x.construct.step)})`,
      o ? `oidc-client-ts (import the bundle + \`new UserManager\`) ${mmm(o.total, " ms")} (import ${f(o.entry.median, 2, o.entry.step)})` : "—",
      "≤ oidc-client-ts (issue 14; on the 95 % CI of the per-sample ratio)",
      x.vsOidc ? `${VERDICT[verdict(x.vsOidc, 1)]} (${f(x.vsOidc.median)}×, ${ciText(x.vsOidc, "×")})` : "—",
    ]);
  }
  const mem = R.memory.tokenwarden;
  const ctl = R.memory.control;
  const s = mem.snaps;
  const at = (snaps, c) => snaps.find((x) => x.cycle === c);
  const a = at(s, 100);
  const z = s[s.length - 1];
  const cyclesJudged = z.cycle - a.cycle;
  // a sample the run could not take (no wasm export, say) is "not measured", never "flat"
  const wasmMeasured = Number.isFinite(a.wasmBytes) && Number.isFinite(z.wasmBytes);
  const wasmFlat = wasmMeasured && z.wasmBytes === a.wasmBytes;
  const heapGrowth = z.jsHeap - a.jsHeap;
  const ctlGrowth = ctl.snaps[ctl.snaps.length - 1].jsHeap - at(ctl.snaps, 100).jsHeap;
  const signed = (n) => `${n >= 0 ? "+" : "−"}${kib(Math.abs(n))}`;
  const wasmKib = (n) => (Number.isFinite(n) ? kib(n) : "not measured");
  // With heap snapshots (the default), the objects the page holds, without V8's code
  // (bytecode, JIT code, feedback: it grows while hot functions get compiled,
  // more for a client than for the ten-line control, and is bounded by the code
  // there is); without them (BENCH_HEAPDIFF=0), the whole JS heap figure.
  // The limit is per cycle, so it means the same in a quick run and in a long one.
  const kinds = mem.kinds && ctl.kinds;
  const limit = MEM_BYTES_PER_CYCLE * cyclesJudged;
  const excess = kinds ? mem.kinds.data - Math.max(0, ctl.kinds.data) : heapGrowth - Math.max(0, ctlGrowth);
  const heapFlat = excess < limit;
  const kindsText = kinds
    ? `; heap snapshots, cycle 100 → end: objects ${signed(mem.kinds.data)}, V8 code ${signed(mem.kinds.code)}`
    : "";
  const ctlKindsText = kinds ? `; objects ${signed(ctl.kinds.data)}, V8 code ${signed(ctl.kinds.code)}` : "";
  // steady-state slope: from the 1,000th cycle (JIT warm-up done) to the end
  const k = at(s, 1000);
  const kc = at(ctl.snaps, 1000);
  const slope = (from, to) => (to.jsHeap - from.jsHeap) / Math.max(1, to.cycle - from.cycle);
  const slopeText =
    k && k !== z
      ? `; from 1,000 to ${z.cycle.toLocaleString("en")}: ${signed(z.jsHeap - k.jsHeap)} (${slope(k, z).toFixed(1)} B/cycle)`
      : "";
  const ctlSlopeText =
    kc && kc !== ctl.snaps[ctl.snaps.length - 1]
      ? `; from 1,000: ${slope(kc, ctl.snaps[ctl.snaps.length - 1]).toFixed(1)} B/cycle`
      : "";
  const memVerdict = !wasmMeasured ? "❔ not measured" : yes(wasmFlat && heapFlat);
  rows.push([
    `memory after ${z.cycle.toLocaleString("en")} refresh cycles (stub endpoint, fake clock) vs after 100`,
    `wasm linear memory ${wasmKib(a.wasmBytes)} → **${wasmKib(z.wasmBytes)}**; JS heap (after GC) ${kib(a.jsHeap)} → **${kib(z.jsHeap)}** (${signed(heapGrowth)}${slopeText}${kindsText})`,
    `control, a plain JS refresher in the same harness: JS heap ${signed(ctlGrowth)}${ctlSlopeText}${ctlKindsText}`,
    `flat: no wasm growth, and JS ${kinds ? "objects" : "heap"} growth over the control's under ${MEM_BYTES_PER_CYCLE} B a cycle (${kib(limit)} over these ${cyclesJudged.toLocaleString("en")} cycles)`,
    memVerdict + ` (wasm ${!wasmMeasured ? "not measured" : wasmFlat ? "flat" : "grew"}, JS ${kinds ? "objects" : "heap"} ${heapFlat ? "flat" : "grew"}: ${signed(excess)} over the control, ${(excess / Math.max(1, cyclesJudged)).toFixed(1).replace("-", "−")} B/cycle)`,
  ]);

  const esc = (x) => String(x).replace(/\|/g, "\\|");
  const table = [
    "| figure | tokenwarden | anchors (same run) | target | met? |",
    "| --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.map(esc).join(" | ")} |`),
  ].join("\n");

  const versions = Object.entries(M.versions)
    .map(([p, v]) => `${p} ${v || "(not installed)"}`)
    .join(", ");
  const skipped = Object.entries(R.anchors).filter(([, v]) => v.skipped).map(([k, v]) => `${k} (${v.skipped})`);
  const snapsTable = [
    "| cycles | tokenwarden: wasm linear memory | tokenwarden: externref table slots | tokenwarden: JS heap used (after GC) | control: JS heap used (after GC) |",
    "| ---: | ---: | ---: | ---: | ---: |",
    ...s.map((x) => `| ${x.cycle.toLocaleString("en")} | ${Number.isFinite(x.wasmBytes) ? `${x.wasmBytes.toLocaleString("en")} B` : "not measured"} | ${x.externrefs ?? "—"} | ${x.jsHeap.toLocaleString("en")} B | ${(at(ctl.snaps, x.cycle)?.jsHeap ?? 0).toLocaleString("en")} B |`),
  ].join("\n");
  const fetchTable = [
    "| variant | stubbed fetch: µs/call (calls a batch) | overhead over the stub (µs) | 127.0.0.1 204: µs/request (requests a batch) | ratio to raw [95 % CI of the median] |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...Object.keys(sf).map((v) => `| ${v} | ${mmm(sf[v].perCall)} (${R.batches.stubFetch[v].n.toLocaleString("en")}) | ${mmm(sf[v].overhead)} | ${nf[v] ? `${mmm(nf[v].perCall)} (${R.batches.netFetch[v].n.toLocaleString("en")})` : "—"} | ${!nf[v] ? "—" : v === "raw" ? "1 (by definition)" : `${mmm(nf[v].ratio, "×", 3)} [${f(nf[v].ratio.ci[0], 3)}–${f(nf[v].ratio.ci[1], 3)}]`} |`),
  ].join("\n");
  const claimsTable = [
    "| variant | ops/s median (min–max) | µs/op median | calls a batch | batch ms, shortest |",
    "| --- | ---: | ---: | ---: | ---: |",
    ...Object.keys(c).map((v) => `| ${v} | ${kopsSt(c[v])} | ${f(R.claimsUs[v].median, 3, R.claimsUs[v].step)} | ${R.batches.claims[v].n.toLocaleString("en")} | ${f(R.batches.claims[v].ms.min, 1)} |`),
  ].join("\n");

  return `# tokenwarden benchmark results

Produced by \`make bench\` (\`bench/run.sh\` → \`node bench/bench.mjs\`) on ${M.date.slice(0, 10)}${M.quick ? " — **BENCH_QUICK smoke run: fewer rounds and cycles**" : ""}.
Every figure is measured in the same run, tokenwarden and anchors side by side; micro figures are
median (min–max) over ${M.rounds} interleaved rounds (${M.netRounds} for the 127.0.0.1 rows, ${M.coldSamples} samples for cold start; the variant
order rotates each round), each round a batch of calls timed inside the page, sized per variant to take at least
${M.minBatchMs} ms (shortest batch of the run: ${f(minBatch(R), 1)} ms). Figures show no digit finer than the clock resolves in a batch. A target is
judged on the bootstrap 95 % confidence interval of the median (10,000 resamples of the rounds): met, missed, or
indistinguishable when the interval covers the target. A benchmark reports figures: it never fails on timing.

- Machine: ${m.nproc} cores (\`nproc\`), ${m.model}
- Browser: Chromium ${R.chromium}, headless (\`--headless=new\`), driven by playwright-core; page cross-origin isolated: ${R.isolated} (performance.now() step measured in the page: ${f(R.clockStepMs * 1000, 1)} µs)
- Node ${M.node}; versions: ${versions}
- tokenwarden: ${R.pkgSource} as built by \`make pkg\` (release), copied at the start of the run${skipped.length ? `\n- Skipped anchors: ${skipped.join(", ")}` : ""}
- Run time: ${R.seconds.toFixed(0)} s; load average (1 min) ${R.load.start[0].toFixed(2)} at the start, ${R.load.end[0].toFixed(2)} at the end (on ${m.nproc} cores: above ${m.nproc} means other work competed for the CPU, and timings are noisier)

${table}

## Details

### Payload (each file compressed alone, as a server sends it)

| file | raw | gzip -9 | brotli q11 |
| --- | ---: | ---: | ---: |
${[...R.payload.files, R.payload.total, ...R.payload.shown].map((x) => `| ${x.path} | ${x.raw} B | ${x.gzip} B | ${x.brotli} B |`).join("\n")}

Through an app's bundler (the entry, glue and .wasm inside, bundled and minified by esbuild with its
defaults, whose ASCII output escapes the .wasm's characters above U+007F): ${kib(R.twMinified.total)} brotli.
${
  R.sizeFloor
    ? `The size floor (\`bench/floor\`, built by \`bench/floor.sh\` with the release flags): the crate's \`policy\` module, every
decision the client makes, behind a synchronous ABI of ${R.sizeFloor.exports} exports (numbers and strings in linear memory; no wasm-bindgen,
no futures, no JS values, no shell): ${R.sizeFloor.raw} B raw, ${R.sizeFloor.brotli} B brotli. No client that keeps every decision in
Rust ships a smaller wasm; its JS shell and the sequencing of the calls come on top.
`
    : "The size floor was not measured (bench/floor.sh did not run).\n"
}
Anchors are esbuild bundles (minified ESM, browser platform) of an entry importing what a user would use:
${M.anchors.map((a) => `${a.label || a.id}: \`${a.src}\` → ${R.anchors[a.id].skipped ? "skipped" : `${R.anchors[a.id].raw} B min, ${R.anchors[a.id].brotli} B brotli`}`).join("; ")}.

### fetch variants

${fetchTable}

Variants: \`raw\` = \`fetch(url)\`; \`minimal\` = a hand-written wrapper (parse the URL, compare the origin,
\`new Headers\`, set Authorization, call fetch); \`axios\` = \`axios.create({ adapter: "fetch" })\` with a request
interceptor setting the header and axios-auth-refresh installed (the fetch adapter ends in the same
window.fetch, so the stub is the same for every variant); \`ky\` = \`ky.create\` with a beforeRequest hook;
\`tokenwarden\` = \`client.fetch(url)\` with a live token. Header check (each variant really sent the
Bearer header): ${JSON.stringify(R.headerCheck)}.

### claims decode

${claimsTable}

\`tw-cached\`: \`claims()\` on the token already set: returns the object parsed on the first call (what a UI
re-render pays); its anchor is \`minimal-memo\`, the minimal decoder memoised per token (returns the last object while
the token is unchanged), since a cache compared with a full decode cannot lose. \`minimal\`: \`JSON.parse(atob(part))\`
every call, the anchor of \`tw-fresh\`. \`tw-fresh\`: \`setSession(response)\` then \`claims()\`: validates the token response, decodes the
JWT in wasm, arms the refresh timer, emits \`signedIn\`, posts to the other tabs (crossTab, on by default), then
\`JSON.parse\`s the payload (what a new token costs).
\`tw-setSession\`: \`setSession\` alone, so fresh − setSession ≈ the \`claims()\` parse.

### cold start parts (medians, ms)

| visit | total | entry import (the .wasm inside) | wasm compile + instantiate (\`init()\`) | \`new TokenClient\` |
| --- | ---: | ---: | ---: | ---: |
${["first", "repeat", "preloaded", "rtt40", "first crossTab:false"].filter((v) => R.cold[v]).map((v) => { const x = R.cold[v]; return `| ${v} | ${f(x.total.median, 2, x.total.step)} | ${f(x.entry.median, 2, x.entry.step)} | ${f(x.init.median, 2, x.init.step)} | ${f(x.construct.median, 3, x.construct.step)} |`; }).join("\n")}

The client is made with the default options (\`crossTab\` on: it joins its BroadcastChannel when constructed) except in the
\`first crossTab:false\` row. A repeat visit has the HTTP cache warm; the entry embeds the .wasm as bytes and compiles it
synchronously (\`WebAssembly.Module\`), and V8's wasm code cache only serves streaming compiles, so every visit compiles it.

### where tokenwarden's time goes (CPU profile, self time, top functions)

${Object.entries(R.profile).map(([name, rows]) => `**${name}**: ` + rows.map((r) => `\`${r.fn.replace(/`/g, "'")}\` ${(r.share * 100).toFixed(1)} %`).join("; ")).join("\n\n")}

### memory over refresh cycles

${snapsTable}

${R.heapDiff ? `Heap snapshot diff, tokenwarden, cycle 1,000 → ${z.cycle.toLocaleString("en")} (top growth by bytes; \`native:\` nodes are Blink/C++ objects outside the JS heap
figure, e.g. \`NetworkResourcesData\` is DevTools' per-request record kept because the driver has the Network domain on; \`code:\` is V8's
JIT and wasm tier-up code): ${R.heapDiff.map(([k, n, b]) => `\`${k.replace(/`/g, "'")}\` ${n >= 0 ? "+" : ""}${n} (${b >= 0 ? "+" : ""}${b} B)`).join("; ")}.

` : ""}tokenwarden: ${mem.served} refreshes served by the stub endpoint, ${mem.events} events seen by a subscriber, in ${mem.seconds.toFixed(0)} s;
control: ${ctl.served} refreshes in ${ctl.seconds.toFixed(0)} s. The control is a plain JS refresher (fetch, JSON, clear and re-arm a
timer) run by the same harness in a fresh context, to show the harness's own drift.
Fake clock: playwright \`page.clock.install()\` (Date, performance.now and timers), advanced 1.1 s before every
\`client.refresh()\` (the client refreshes at most once a second) by the clock's in-page controller, in a loop inside the page.
Each refresh gets a new token (new \`jti\`). JS heap: CDP \`Runtime.getHeapUsage\` after \`HeapProfiler.collectGarbage\` (×3).
The client runs with \`crossTab: false\` here (one tab, nothing to coordinate with).
"Flat" means the wasm memory did not grow and the JS objects grew by less than ${MEM_BYTES_PER_CYCLE} bytes a cycle more than the control's
between cycle 100 and the end (${kib(limit)} over these ${cyclesJudged.toLocaleString("en")} cycles); wasm memory never shrinks, so it shows the
high-water mark. A wasm sample the run could not take reads "not measured", never "flat".
JS objects are the heap snapshot's nodes other than V8's code (bytecode, JIT code, feedback vectors), which grows while V8
compiles the hot functions, more for the client than for the control, and is bounded by the code there is; the JS heap
figure counts both. With \`BENCH_HEAPDIFF=0\` (no snapshots) the criterion falls back to the JS heap figure.
`;
}

if (process.argv[2] === "--report") {
  // re-render RESULTS.md from a saved bench/.out/results.json (no measuring)
  const file = process.argv[3] || join(out, "results.json");
  const R = JSON.parse(readFileSync(file, "utf8"));
  if (R.schema !== 2) {
    // an older file has neither the run's own details (date, machine, versions, rounds) nor the
    // per-round intervals: rendering it now would label it with today's
    console.error(`[bench] ${file} was written by an older bench (no schema 2: no recorded run details); run the bench again`);
    process.exit(1);
  }
  const md = report(R);
  console.log(md);
  writeFileSync(join(here, "RESULTS.md"), md);
} else main().catch((e) => {
  console.error("[bench] failed:", e);
  process.exit(1);
});
