// tokenwarden: npm entry (hand-written; copied into pkg/ by scripts/build-pkg.sh).
//
// Importing this module has no side effects: it touches no browser global
// and compiles no wasm (the wasm-bindgen glue it imports only defines functions
// and makes a TextEncoder/TextDecoder). The first createTokenClient() call
// instantiates the wasm once; later calls reuse it.
//
// The glue is imported statically, and the release build bundles it and the
// .wasm itself (scripts/embed-wasm.mjs) into this file (scripts/build-pkg.sh):
// a cold start waits for one request, not for a module and then the .wasm.
import * as glue from "./tokenwarden.js";
// The .wasm: inside this file in the release build, fetched beside it in the --dev build.
import { wasm } from "./wasm.js";

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
 * `send` is the crate's one call of `fetch`. `Request` inputs, an `init` the fast path
 * could not pass on or read again as it is (`simpleInit`), and invalid URLs or headers
 * take the full path.
 */
function fastFetch({ TokenClient: { prototype: proto }, send, sendError }) {
  const full = proto.fetch;
  proto.fetch = function (input, init) {
    if ((typeof input === "string" || input instanceof URL) && simpleInit(init)) {
      let origin, headers;
      try {
        origin = new URL(input, document.baseURI).origin;
        headers = new Headers(init == null ? undefined : init.headers);
      } catch {
        return abortable(full.call(this, input, init), input, init);
      }
      const auth = this.fastAuth(origin, headers.has("authorization"));
      const failed = (e) => {
        throw sendError(e);
      };
      if (auth === null) return abortable(send(input, init).then(undefined, failed), input, init);
      if (auth !== undefined) {
        headers.set("Authorization", auth);
        return abortable(
          send(input, { ...init, headers }).then(
            (res) => (this.replayNeeded(res.status, res.redirected ? res.url : "") ? this.replay(res, input, init, auth) : res),
            failed,
          ),
          input,
          init,
        );
      }
    }
    return abortable(full.call(this, input, init), input, init);
  };
}

/** Whether `o` is a plain object (its prototype `Object.prototype` or none). */
function plain(o) {
  const p = Object.getPrototypeOf(o);
  return p === Object.prototype || p === null;
}

/**
 * Whether the fast path may take `init`: none, or a plain object (its `{ ...init }` copy
 * keeps every option; a `Request` or an object with inherited options would lose them)
 * whose body is absent or a string, whose headers can be read twice (for a 401's replay: a
 * one-shot iterable cannot), and which is not `no-cors` (the browser drops our header from
 * those; the full path sends them as they are).
 */
function simpleInit(init) {
  if (init == null) return true;
  try {
    const { body, headers, mode } = init;
    return (
      plain(init) &&
      (body == null || typeof body === "string") &&
      mode !== "no-cors" &&
      (headers == null || headers instanceof Headers || Array.isArray(headers) || plain(headers))
    );
  } catch {
    return false; // a getter that throws: the full path turns it into the typed error
  }
}

/**
 * `promise`, or a rejection with the request's `signal.reason` (`init.signal`, else a
 * `Request`'s own) as soon as it aborts, as `fetch` itself does: a request waiting in the
 * wasm (for a refresh in flight, or for the refresh before a replay) does not hold up a
 * caller who gave up. It is never sent then: `fetch` refuses an aborted signal. The fast path
 * comes here too: an abort during its send rejects with the same reason (an
 * `AbortSignal.timeout()` gives its `TimeoutError`, as `fetch` does) whichever path the
 * request took. Without a signal this costs one property read.
 */
function abortable(promise, input, init) {
  const signal = (init && init.signal) || (input instanceof Request ? input.signal : null);
  if (!signal) return promise;
  return new Promise((resolve, reject) => {
    const abort = () => reject(signal.reason);
    if (signal.aborted) abort();
    else signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
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

/** A failed load as a TokenClientError (the wasm, which names every other error, is not there). */
function loadError(code, message, cause, status) {
  const e = new TokenClientError(message, code);
  if (status) e.status = status;
  if (cause) e.cause = cause;
  return e;
}

/**
 * Instantiates the wasm from `source`: the release build's bytes at once, on this thread
 * (measured in headless Chromium, a fresh page each sample, medians of 21: `init()` 3.8–4.1 →
 * 2.4–3.0 ms; the asynchronous compile adds hops to a compile thread and back); `fetch`'s
 * promise (the --dev build), or bytes an engine will not compile synchronously at this size
 * (Chromium before 115: RangeError above 4 KB on the main thread), asynchronously.
 */
function instantiate(source) {
  if (source instanceof Uint8Array) {
    try {
      glue.initSync({ module: source });
      return Promise.resolve();
    } catch (e) {
      if (!(e instanceof RangeError)) return Promise.reject(e);
    }
  }
  return glue.default({ module_or_path: source });
}

/**
 * Loads and instantiates the wasm once; resolves with the wasm-bindgen glue module. A
 * failed load rejects with a TokenClientError: `unsupported_environment` when the browser
 * has no WebAssembly or would not compile it (`cause`: its own error), and in the --dev
 * build, which fetches the .wasm, `network` when it could not be downloaded.
 */
export function init() {
  if (!loading) {
    if (typeof WebAssembly !== "object") {
      return Promise.reject(loadError("unsupported_environment", "WebAssembly is turned off in this browser"));
    }
    let source;
    try {
      source = wasm(loadError);
    } catch (e) {
      source = Promise.reject(e); // a policy that forbids compiling WebAssembly
    }
    loading = instantiate(source).then(
      () => {
        glue.__setErrorClass(TokenClientError);
        fastFetch(glue);
        login(glue);
        return glue;
      },
      (e) => {
        // A Content-Security-Policy without 'wasm-unsafe-eval' (or, in the --dev build, a
        // file that is not the package's .wasm).
        throw e instanceof TokenClientError
          ? e
          : loadError(
              "unsupported_environment",
              "could not compile tokenwarden's wasm: a Content-Security-Policy must allow 'wasm-unsafe-eval'",
              e,
            );
      },
    );
    // A failed load is not kept: a later call tries again.
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
  try {
    return new glue.TokenClient(options);
  } catch (e) {
    // The wasm reads the options through JS (keys, prototypes, items): a Proxy whose trap
    // throws, or a revoked one, throws from inside that walk. Named as what it is; a wasm
    // trap is not an options problem and goes as it is.
    if (e instanceof TokenClientError || e instanceof WebAssembly.RuntimeError) throw e;
    throw loadError("invalid_options", "options could not be read", e);
  }
}
