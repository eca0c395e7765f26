// The multi-engine test page's module (see client.html): creates the client with the
// options of ?opts=<json> and exposes small helpers the tests call through WebDriver.
const params = new URLSearchParams(location.search);
const extra = params.get("opts") ? JSON.parse(params.get("opts")) : {};
window.events = [];
try {
  const { createTokenClient } = await import("/pkg/index.js");
  const tw = await createTokenClient({ refreshUrl: "/auth/refresh", logoutUrl: "/auth/logout", ...extra });
  window.tw = tw;
  tw.subscribe((ev) => {
    window.events.push({
      type: ev.type,
      reason: ev.reason,
      source: ev.source,
      code: ev.error ? ev.error.code : undefined,
      at: Date.now(),
    });
  });
  window.login = async (username = "demo", password = "demo") => {
    const res = await fetch("/auth/login", {
      method: "POST",
      credentials: "include",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (!res.ok) throw new Error(`login failed: ${res.status}`);
    tw.setSession(await res.json());
  };
  window.callApi = async () => (await tw.fetch("/api/me")).status;
  // A loop of tw.fetch('/api/me') every `everyMs`, recording statuses and errors.
  window.startLoop = (everyMs = 500) => {
    // trace, for failure messages: per call [start (epoch ms), duration ms, status or error].
    const stats = (window.loopStats = { statuses: {}, errors: [], calls: 0, trace: [], running: true, jtis: [] });
    (async () => {
      while (stats.running) {
        const t0 = performance.now();
        let outcome;
        try {
          outcome = await window.callApi();
          stats.statuses[outcome] = (stats.statuses[outcome] || 0) + 1;
        } catch (e) {
          outcome = String(e && (e.code || e.name));
          stats.errors.push(outcome);
        }
        stats.trace.push([Math.round(performance.timeOrigin + t0), Math.round(performance.now() - t0), outcome]);
        stats.calls++;
        const jti = (tw.claims() || {}).jti;
        if (jti && stats.jtis[stats.jtis.length - 1] !== jti) stats.jtis.push(jti);
        const wait = everyMs - (performance.now() - t0);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      stats.done = true;
    })();
  };
  window.stopLoop = async () => {
    window.loopStats.running = false;
    const end = Date.now() + 5000;
    while (!window.loopStats.done && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    return window.loopStats;
  };
  window.twReady = true;
} catch (e) {
  window.twError = String(e && (e.code || e.message) || e);
}
