// The strict-CSP page's module (csp.html): window.twLoad is what createTokenClient() did.
const m = await import("/pkg/index.js");
try {
  await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
  window.twLoad = { created: true };
} catch (e) {
  window.twLoad = {
    typed: e instanceof m.TokenClientError,
    code: e.code,
    message: e.message,
    cause: e.cause ? `${e.cause.name}: ${e.cause.message}` : null,
  };
}
