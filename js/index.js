// tokenwarden: npm entry (hand-written; copied into pkg/ by scripts/build-pkg.sh).
//
// Importing this module has no side effects: it touches no browser global
// and loads no wasm. The first createTokenClient() call loads the
// wasm-bindgen glue and the .wasm once; later calls reuse them.

/** Every error the client throws or rejects with. */
export class TokenClientError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "TokenClientError";
    if (code !== undefined) this.code = code;
  }
}

let loading;

/** Loads and instantiates the wasm once (the raw wasm-bindgen `init`). */
export function init() {
  if (!loading) {
    loading = import("./tokenwarden.js").then(async (glue) => {
      await glue.default();
      glue.__setErrorClass(TokenClientError);
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
