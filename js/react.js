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
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { createTokenClient, init } from "./index.js";

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

/** A stable identity for an options object (plain data; URLs become hrefs). */
function optionsKey(options) {
  try {
    return JSON.stringify(options ?? null);
  } catch {
    return String(Math.random()); // not serialisable: treat as always new
  }
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
  const [owned, setOwned] = useState(/** @type {{ client: TokenClient | null, loading: boolean, error: unknown }} */ ({
    client: null,
    loading: true,
    error: undefined,
  }));
  // Latest values for the effect without making them dependencies.
  const latest = useRef({ options, onError: props.onError });
  latest.current = { options, onError: props.onError };
  const key = given ? "" : optionsKey(options);

  useEffect(() => {
    if (given) return undefined;
    let cancelled = false;
    /** @type {TokenClient | null} */
    let created = null;
    const fail = (error) => {
      if (cancelled) return;
      setOwned((s) => ({ ...s, loading: false, error }));
      latest.current.onError?.(error);
    };
    setOwned((s) => (s.client === null && s.loading && s.error === undefined ? s : { client: null, loading: true, error: undefined }));
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
  }, [given, key, autoStart]);

  const value = given
    ? { client: given, loading: false, error: undefined }
    : owned;
  return createElement(TokenContext.Provider, { value: useStableValue(value) }, children);
}

/** Keeps the context value's identity while its fields are unchanged. */
function useStableValue(value) {
  const ref = useRef(value);
  const prev = ref.current;
  if (prev.client !== value.client || prev.loading !== value.loading || prev.error !== value.error) {
    ref.current = value;
  }
  return ref.current;
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
 * @property {Record<string, unknown> | undefined} claims  JWT payload, NOT verified (UI only)
 * @property {unknown} error  why creating or starting the client failed, if it did
 */

const LOADING = Object.freeze({ state: "loading", expiresAt: undefined, claims: undefined });
const SIGNED_OUT = Object.freeze({ state: "signedOut", expiresAt: undefined, claims: undefined });
const noopSubscribe = () => () => {};

/**
 * The session, re-rendering on every client event (signedIn, refreshed,
 * refreshFailed, signedOut).
 * @returns {Session}
 */
export function useSession() {
  const { client, loading, error } = useContext(TokenContext);
  // The snapshot changes only on an event or a change of client.state:
  // client.expiresAt is recomputed from the clocks on every read, so it may
  // differ by a millisecond between two reads, and getSnapshot must be stable.
  const version = useRef(0);
  const cache = useRef(/** @type {{ client: unknown, version: number, state: string, snap: any }} */ ({
    client: null,
    version: -1,
    state: "",
    snap: LOADING,
  }));

  const subscribe = useCallback(
    (onChange) => {
      if (!client) return noopSubscribe();
      return client.subscribe(() => {
        version.current += 1;
        onChange();
      });
    },
    [client],
  );
  const getSnapshot = () => {
    if (!client) return LOADING;
    let state;
    try {
      state = client.state;
    } catch {
      return LOADING; // disposed under us (unmounting)
    }
    const c = cache.current;
    if (c.client !== client || c.version !== version.current || c.state !== state) {
      let expiresAt;
      let claims;
      try {
        expiresAt = client.expiresAt;
        claims = client.claims();
      } catch {
        // disposed: keep undefined
      }
      cache.current = {
        client,
        version: version.current,
        state,
        snap: Object.freeze({ state, expiresAt, claims }),
      };
    }
    return cache.current.snap;
  };
  let snap = useSyncExternalStore(subscribe, getSnapshot, () => LOADING);
  if (loading && snap.state === "signedOut") {
    // start() has not settled yet: "signedOut" would flash a login form.
    snap = LOADING;
  } else if (!loading && snap === LOADING) {
    snap = SIGNED_OUT; // creating the client failed (see error)
  }
  return error === undefined ? snap : { ...snap, error };
}
