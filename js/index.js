// tokenwarden: npm entry (hand-written; copied into pkg/ by scripts/build-pkg.sh).
//
// Importing this module has no side effects: it touches no browser global
// and loads no wasm (the wasm-bindgen glue it imports only defines functions
// and makes a TextEncoder/TextDecoder). The first createTokenClient() call
// fetches and instantiates the .wasm once; later calls reuse it.
//
// The glue is imported statically, and the release build bundles it into
// this file (scripts/build-pkg.sh): a cold start then waits for one module
// and the .wasm, not a module, a second module and the .wasm (measured in
// headless Chromium, first visit: 51 -> 42 ms, median of 21).
import * as glue from "./tokenwarden.js";

/** Every error the client throws or rejects with. */
export class TokenClientError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "TokenClientError";
    if (code !== undefined) this.code = code;
  }
}

let loading;

/**
 * `client.fetch` without a wasm `Promise` or a `Request` object in the common
 * case (issue 14: fetch overhead). This gathers facts and performs; the wasm
 * decides: `fastAuth` (attach which header, send as is, or take the full
 * path), `replayNeeded` (refresh and replay after this response?), and
 * `send` is the crate's one call of `fetch`. Requests with a body other than
 * a string, `Request` inputs and invalid URLs or headers take the full path.
 */
function fastFetch({ TokenClient: { prototype: proto }, send, sendError }) {
  const full = proto.fetch;
  proto.fetch = function (input, init) {
    const body = init == null ? undefined : init.body;
    if ((typeof input === "string" || input instanceof URL) && (body == null || typeof body === "string")) {
      let origin, headers;
      try {
        origin = new URL(input, document.baseURI).origin;
        headers = new Headers(init == null ? undefined : init.headers);
      } catch {
        return full.call(this, input, init);
      }
      const auth = this.fastAuth(origin, headers.has("authorization"));
      const failed = (e) => {
        throw sendError(e);
      };
      if (auth === null) return send(input, init).then(undefined, failed);
      if (auth !== undefined) {
        headers.set("Authorization", auth);
        return send(input, { ...init, headers }).then(
          (res) =>
            this.replayNeeded(res.status, res.redirected ? res.url : "") ? this.replay(res, input, init, auth) : res,
          failed,
        );
      }
    }
    return full.call(this, input, init);
  };
}

/**
 * `client.login(returnTo)`: the wasm decides where to go (`loginTarget`:
 * `loginUrl?returnTo=…`, or a typed error); the entry navigates.
 */
function login({ TokenClient: { prototype: proto } }) {
  proto.login = function (returnTo) {
    location.assign(this.loginTarget(returnTo == null ? location.href : returnTo));
  };
}

/** Loads and instantiates the wasm once; resolves with the wasm-bindgen glue module. */
export function init() {
  if (!loading) {
    // The glue compiles the .wasm as it streams in.
    loading = glue.default({ module_or_path: fetch(new URL("./tokenwarden_bg.wasm", import.meta.url)) }).then(() => {
      glue.__setErrorClass(TokenClientError);
      fastFetch(glue);
      login(glue);
      return glue;
    });
    // A failed load (offline, CSP) may be retried by a later call.
    loading.catch(() => {
      loading = undefined;
    });
  }
  return loading;
}

/** Creates a TokenClient; rejects with code `unsupported_environment` outside a browser window. */
export async function createTokenClient(options) {
  if (typeof window === "undefined" || typeof document === "undefined" || typeof fetch !== "function") {
    throw new TokenClientError(
      "tokenwarden needs a browser window (no window/fetch here)",
      "unsupported_environment",
    );
  }
  const glue = await init();
  return new glue.TokenClient(options);
}
