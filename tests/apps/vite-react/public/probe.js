// Counts what a TokenClient holds while alive: BroadcastChannels and the
// page-lifecycle listeners (visibilitychange, focus, online, pageshow). Also records
// uncaught errors, unhandled rejections, Content-Security-Policy violations and console
// lines in window.__rec, which the
// multi-engine suite (tests/engines) reads in browsers whose WebDriver has no console API.
(function () {
  var rec = (window.__rec = { console: [], errors: [], visibility: [] });
  ["log", "info", "warn", "error", "debug"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      try { rec.console.push({ level: level, text: Array.prototype.map.call(arguments, String).join(" ") }); } catch (e) { /* ignore */ }
      return original.apply(this, arguments);
    };
  });
  window.addEventListener("error", function (e) { rec.errors.push("error: " + e.message); });
  window.addEventListener("unhandledrejection", function (e) {
    var r = e.reason;
    rec.errors.push("unhandled rejection: " + ((r && (r.code || r.name || r.message)) || r));
  });
  document.addEventListener("securitypolicyviolation", function (e) {
    rec.errors.push("CSP violation: " + e.violatedDirective + " " + e.blockedURI);
  });
  var channels = new Set();
  var Native = window.BroadcastChannel;
  if (Native) {
    var close = Native.prototype.close;
    window.BroadcastChannel = function (name) {
      var bc = new Native(name);
      channels.add(bc);
      bc.close = function () { channels.delete(bc); return close.call(bc); };
      return bc;
    };
    window.BroadcastChannel.prototype = Native.prototype;
  }
  var kinds = { visibilitychange: 1, focus: 1, online: 1, pageshow: 1 };
  var live = new Set();
  var add = EventTarget.prototype.addEventListener;
  var remove = EventTarget.prototype.removeEventListener;
  function tracked(t) { return t === window || t === document; }
  EventTarget.prototype.addEventListener = function (type, fn, opts) {
    if (tracked(this) && kinds[type] && fn) live.add(fn);
    return add.call(this, type, fn, opts);
  };
  EventTarget.prototype.removeEventListener = function (type, fn, opts) {
    if (tracked(this) && kinds[type] && fn) live.delete(fn);
    return remove.call(this, type, fn, opts);
  };
  window.__twProbe = function () {
    return { channels: channels.size, lifecycleListeners: live.size };
  };
})();
