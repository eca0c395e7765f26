// tokenwarden/react: optional React bindings (hand-written; copied into pkg/
// by scripts/build-pkg.sh). React is an optional peer dependency of the
// package: only this entry imports it, never the main entry.
//
//   <TokenProvider options={{ refreshUrl: "/auth/refresh", logoutUrl: "/auth/logout" }}>
//     <App />
//   </TokenProvider>
//
//   const client = useTokenClient();            // TokenClient, or null while loading
//   const { state, expiresAt, claims } = useSession();
//
// Lifecycle: the provider creates its client in an effect (never during
// render, so server rendering never touches the wasm or a browser global),
// calls start(), and disposes it when it unmounts or when the options change.
// Under React Strict Mode the development-only mount → unmount → mount runs
// the effect twice: the first run is cancelled before its client exists (or
// its client is disposed the moment it arrives), so exactly one client, one
// timer set and one BroadcastChannel listener stay alive.

import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { createTokenClient, init, TokenClientError } from "./index.js";

/** @typedef {import("./index.js").TokenClient} TokenClient */
/** @typedef {import("./index.js").TokenClientOptions} TokenClientOptions */

/**
 * @typedef {object} ProviderValue
 * @property {TokenClient | null} client
 * @property {boolean} loading  true until the client exists and start() settled
 * @property {unknown} error    why creating or starting the client failed
 */

/** @type {ProviderValue} */
const OUTSIDE = { client: null, loading: true, error: undefined };
const TokenContext = createContext(OUTSIDE);
TokenContext.displayName = "TokenContext";

/**
 * A stable identity for an options object: its content as text. Options are
 * plain data (URL objects count as their href); anything that cannot be
 * compared between renders (a function, a BigInt, a symbol, a class
 * instance) throws invalid_options naming the option's path.
 */
function optionsKey(value, path = "options") {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
    case "boolean":
      return String(value);
    case "object":
      break;
    default:
      throw uncomparable(path, typeof value);
  }
  if (typeof URL !== "undefined" && value instanceof URL) return JSON.stringify(value.href);
  if (Array.isArray(value)) {
    return `[${value.map((v, i) => optionsKey(v, `${path}[${i}]`)).join(",")}]`;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) throw uncomparable(path, "object that is not plain data");
  const parts = [];
  for (const k of Object.keys(value)) {
    if (value[k] === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${optionsKey(value[k], `${path}.${k}`)}`);
  }
  return `{${parts.join(",")}}`;
}

function uncomparable(path, what) {
  return new TokenClientError(
    `${path} is a ${what}: TokenProvider options must be plain data so that renders can be compared ` +
      "(create the client yourself and pass it as the client prop otherwise)",
    "invalid_options",
  );
}

/**
 * Provides one TokenClient to the tree below.
 *
 * Either `options` (the provider creates the client, calls start() and
 * disposes it on unmount; a change of the options' content makes a new
 * client) or `client` (a client you created: the provider only shares it;
 * starting and disposing it stay yours).
 *
 * @param {{
 *   options?: TokenClientOptions,
 *   client?: TokenClient | null,
 *   autoStart?: boolean,
 *   onError?: (error: unknown) => void,
 *   children?: import("react").ReactNode,
 * }} props
 */
export function TokenProvider(props) {
  const { options, client: given, autoStart = true, children } = props;
  // `client={null}`: the app makes the client itself and it is not there yet ("loading"); only
  // a provider given no `client` at all makes its own from `options`.
  const external = given !== undefined;
  const [owned, setOwned] = useState(/** @type {{ client: TokenClient | null, loading: boolean, error: unknown }} */ ({
    client: null,
    loading: true,
    error: undefined,
  }));
  // Latest values for the effect without making them dependencies; written
  // in an effect (declared first, so it runs first), never during render.
  const latest = useRef({ options, onError: props.onError });
  useEffect(() => {
    latest.current = { options, onError: props.onError };
  });
  let key = "";
  /** @type {unknown} */
  let keyError;
  if (!external) {
    try {
      key = optionsKey(options);
    } catch (error) {
      keyError = error;
      key = `!${error.message}`; // stable: the same bad options do not re-run the effect
    }
  }

  useEffect(() => {
    if (external) return undefined;
    let cancelled = false;
    /** @type {TokenClient | null} */
    let created = null;
    const fail = (error) => {
      if (cancelled) return;
      setOwned((s) => ({ ...s, loading: false, error }));
      latest.current.onError?.(error);
    };
    setOwned((s) => (s.client === null && s.loading && s.error === undefined ? s : { client: null, loading: true, error: undefined }));
    if (keyError !== undefined) {
      fail(keyError);
      return () => {
        cancelled = true;
      };
    }
    (async () => {
      // init() first: a Strict Mode cleanup that runs while the wasm loads
      // means no client is ever constructed for this (cancelled) run.
      if (typeof window !== "undefined") await init();
      if (cancelled) return;
      const c = await createTokenClient(latest.current.options);
      if (cancelled) {
        c.dispose(); // cleanup ran while it was being made
        return;
      }
      created = c;
      setOwned({ client: c, loading: autoStart, error: undefined });
      if (!autoStart) return;
      try {
        await c.start();
        if (!cancelled) setOwned((s) => (s.client === c ? { ...s, loading: false } : s));
      } catch (error) {
        if (!cancelled && error?.code !== "disposed") fail(error);
      }
    })().catch(fail);
    return () => {
      cancelled = true;
      if (created) created.dispose();
      created = null;
    };
  }, [external, key, autoStart]);

  const value = useMemo(
    () => (external ? { client: given, loading: given === null, error: undefined } : owned),
    [external, given, owned],
  );
  return createElement(TokenContext.Provider, { value }, children);
}

/** The provider's TokenClient, or null while it loads (and during server rendering). */
export function useTokenClient() {
  return useContext(TokenContext).client;
}

/**
 * @typedef {object} Session
 * @property {"loading" | "signedOut" | "active" | "refreshing"} state
 *   "loading" until the client exists and start() settled
 * @property {number | undefined} expiresAt  epoch ms of this page's clock
 * @property {number | undefined} refreshAt  when the next silent refresh is planned (epoch ms)
 * @property {Record<string, unknown> | undefined} claims  JWT payload, NOT verified (UI only)
 * @property {unknown} error  why creating or starting the client failed, if it did
 */

const LOADING = Object.freeze({ state: "loading", expiresAt: undefined, refreshAt: undefined, claims: undefined });
const SIGNED_OUT = Object.freeze({ state: "signedOut", expiresAt: undefined, refreshAt: undefined, claims: undefined });
const noop = () => {};
const noopSubscribe = () => noop;

/**
 * An external store over one client: the snapshot changes only on a client
 * event (stateChanged included) — client.expiresAt is recomputed from the
 * clocks on every read and may differ by a millisecond between two reads,
 * while getSnapshot must be stable. The cache lives in the store, not in a
 * ref written during render.
 */
function sessionStore(client) {
  if (!client) return { subscribe: noopSubscribe, getSnapshot: () => LOADING };
  let version = 0;
  let seen = -1;
  let snap = LOADING;
  return {
    subscribe(onChange) {
      try {
        return client.subscribe(() => {
          version += 1;
          onChange();
        });
      } catch {
        // Disposed already: when the provider's options change, React runs its cleanup
        // (which disposes this client) before the effects of children that mount in the same
        // commit, and they subscribe to the client they were rendered with. The next render
        // gives them the new client, and this store is replaced with it.
        return noop;
      }
    },
    getSnapshot() {
      // An event before subscribe() ran has no version bump: state catches it.
      let state;
      try {
        state = client.state;
      } catch {
        return LOADING; // disposed under us (unmounting)
      }
      if (seen === version && snap.state === state) return snap;
      try {
        snap = Object.freeze({
          state,
          expiresAt: client.expiresAt,
          refreshAt: client.refreshAt,
          claims: client.claims(),
        });
      } catch {
        snap = LOADING; // disposed under us (unmounting)
      }
      seen = version;
      return snap;
    },
  };
}

/**
 * The session, re-rendering on every client event (signedIn, refreshed,
 * refreshFailed, signedOut, stateChanged).
 * @returns {Session}
 */
export function useSession() {
  const { client, loading, error } = useContext(TokenContext);
  const store = useMemo(() => sessionStore(client), [client]);
  let snap = useSyncExternalStore(store.subscribe, store.getSnapshot, () => LOADING);
  if (loading && snap.state === "signedOut") {
    // start() has not settled yet: "signedOut" would flash a login form.
    snap = LOADING;
  } else if (!loading && snap === LOADING) {
    snap = SIGNED_OUT; // creating the client failed (see error)
  }
  return error === undefined ? snap : { ...snap, error };
}
