// The load page's module (load.html): window.twLoad is how many asynchronous compiles
// (WebAssembly.instantiate / compile) loading the package and making a client took, and the
// client's state. The release entry compiles its embedded .wasm synchronously, falling back to
// the asynchronous path only where an engine refuses that (js/index.js, instantiate()).
const W = WebAssembly;
const { instantiate, compile } = W;
let async = 0;
W.instantiate = (...args) => (async++, instantiate.apply(W, args));
W.compile = (...args) => (async++, compile.apply(W, args));
try {
  const m = await import("/pkg/index.js");
  const client = await m.createTokenClient({ refreshUrl: "/auth/refresh", crossTab: false });
  window.twLoad = { async, state: client.state };
  client.dispose();
} catch (e) {
  window.twLoad = { async, error: `${e.name}: ${e.message}` };
} finally {
  W.instantiate = instantiate;
  W.compile = compile;
}
