// The .wasm of the --dev build, fetched beside the entry. The release build replaces this
// module with one that carries the .wasm inside the entry (scripts/embed-wasm.mjs): one
// request instead of two in a row.

/**
 * The .wasm as the glue takes it: here `fetch`'s promise, its failures turned into `fail`'s
 * errors (code network).
 */
export function wasm(fail) {
  return fetch(new URL("./tokenwarden_bg.wasm", import.meta.url)).then(
    (res) => {
      if (res.ok) return res;
      throw fail("network", `could not download tokenwarden's .wasm (HTTP ${res.status})`, undefined, res.status);
    },
    (e) => {
      throw fail("network", "could not download tokenwarden's .wasm", e);
    },
  );
}
