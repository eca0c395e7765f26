// The app of the upstream-mode tests (loaded by app.html as a module: the server's CSP allows
// no inline script). "Sign in" calls tw.login() (top-level navigation to /auth/login); on
// every load the page calls tw.start() and records the result in window.started. Options for
// createTokenClient come from ?opts=<json>. It never prints or stores a token.
const params = new URLSearchParams(location.search);
const extra = params.get("opts") ? JSON.parse(params.get("opts")) : {};
window.events = [];
try {
  const { createTokenClient } = await import("/pkg/index.js");
  const tw = await createTokenClient({
    refreshUrl: "/auth/refresh", logoutUrl: "/auth/logout", loginUrl: "/auth/login", ...extra,
  });
  window.tw = tw;
  tw.subscribe((ev) => {
    window.events.push({
      type: ev.type, reason: ev.reason, source: ev.source,
      code: ev.error ? ev.error.code : undefined, status: ev.error ? ev.error.status : undefined,
      retryInMs: ev.retryInMs, at: Date.now(),
    });
  });
  document.getElementById("sign-in").onclick = () => tw.login();
  window.me = async () => {
    const res = await tw.fetch("/api/me");
    return { status: res.status, body: res.ok ? await res.json() : undefined };
  };
  window.callApi = async () => (await tw.fetch("/api/me")).status;
  window.startLoop = (everyMs = 500) => {
    const stats = (window.loopStats = { statuses: {}, errors: [], calls: 0, running: true });
    (async () => {
      while (stats.running) {
        const t0 = performance.now();
        try {
          const s = await window.callApi();
          stats.statuses[s] = (stats.statuses[s] || 0) + 1;
        } catch (e) {
          stats.errors.push(String(e && (e.code || e.name)));
        }
        stats.calls++;
        const wait = everyMs - (performance.now() - t0);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    })();
  };
  window.stopLoop = async () => {
    window.loopStats.running = false;
    await new Promise((r) => setTimeout(r, 600));
    return window.loopStats;
  };
  window.loginError = params.get("login_error");
  window.started = await tw.start().catch((e) => `error:${e && e.code}`);
  document.getElementById("status").textContent = window.started === true ? "signed in" : "signed out";
} catch (e) {
  window.twError = String(e && (e.code || e.message) || e);
}
