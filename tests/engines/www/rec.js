// Recorder of the multi-engine test page, loaded first (a file, not an inline script: the
// reference server's Content-Security-Policy allows scripts from 'self' only). It records
// console lines, uncaught errors, unhandled rejections, Content-Security-Policy violations
// and visibility changes in window.__rec, the same way in every engine (WebDriver classic
// has no console API in Firefox and WebKit). The page never prints or stores a token.
window.__rec = { console: [], errors: [], visibility: [[document.visibilityState, Date.now()]] };
for (const level of ["log", "info", "warn", "error", "debug"]) {
  const original = console[level];
  console[level] = function (...args) {
    try { window.__rec.console.push({ level, text: args.map((a) => String(a && a.stack ? a.stack : a)).join(" ") }); } catch { /* ignore */ }
    return original.apply(this, args);
  };
}
addEventListener("error", (e) => window.__rec.errors.push(`error: ${e.message}`));
addEventListener("unhandledrejection", (e) => {
  const r = e.reason;
  window.__rec.errors.push(`unhandled rejection: ${r && (r.code || r.name || r.message) || r}`);
});
document.addEventListener("securitypolicyviolation", (e) => {
  window.__rec.errors.push(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
});
document.addEventListener("visibilitychange", () => window.__rec.visibility.push([document.visibilityState, Date.now()]));
