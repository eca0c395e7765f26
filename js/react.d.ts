import type { ReactNode, ReactElement } from "react";
import type { TokenClient, TokenClientOptions, TokenClientState } from "./index.js";

export interface TokenProviderProps {
  /**
   * Options for createTokenClient. The provider creates the client in an
   * effect, calls start() and disposes it on unmount. Compared by content,
   * so an inline object literal does not make a new client per render; a
   * value that cannot be compared (a function, a BigInt, a class instance
   * other than URL) is an invalid_options error.
   */
  options?: TokenClientOptions;
  /**
   * A client you created yourself: shared as is, never started or disposed by the provider.
   * null while you are still creating it (the session reads "loading").
   */
  client?: TokenClient | null;
  /** Call start() after creating the client (default true). */
  autoStart?: boolean;
  /** Called when creating or starting the client fails. */
  onError?: (error: unknown) => void;
  children?: ReactNode;
}

export declare function TokenProvider(props: TokenProviderProps): ReactElement;

/** The provider's client; null while it loads, during server rendering and outside a provider. */
export declare function useTokenClient(): TokenClient | null;

export type SessionState = "loading" | TokenClientState;

export interface Session {
  /** "loading" until the client exists and start() has settled. */
  readonly state: SessionState;
  /** Expiry in epoch ms of this page's clock. */
  readonly expiresAt: number | undefined;
  /** When the next silent refresh is planned, epoch ms of this page's clock. */
  readonly refreshAt: number | undefined;
  /** The JWT payload, decoded but NOT verified (for UI only). */
  readonly claims: Record<string, unknown> | undefined;
  /** Why creating or starting the client failed, if it did. */
  readonly error?: unknown;
}

/** The session; re-renders on every client event (stateChanged included). */
export declare function useSession(): Session;
