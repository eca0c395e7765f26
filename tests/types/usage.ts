// A typed use of the package as an app writes it: `tsc --strict` over this
// file checks js/index.d.ts (make types, part of make test). The @ts-expect-error
// lines prove the types refuse what the runtime refuses.
import {
  createTokenClient,
  init,
  TokenClientError,
  type TokenClient,
  type TokenClientEvent,
  type TokenClientOptions,
  type TokenClientState,
} from "../../js/index.js";

const options: TokenClientOptions = {
  refreshUrl: "/auth/refresh",
  logoutUrl: new URL("https://app.example/auth/logout"),
  allowedOrigins: ["https://api.example"],
  refreshHeaders: { "X-Requested-With": "tokenwarden" },
  crossTab: true,
  dpop: true,
  channelName: "tokenwarden",
  requestTimeoutMs: 10_000,
  retry: { maxAttempts: 5, baseDelayMs: 1_000, maxDelayMs: 30_000 },
};

// @ts-expect-error refreshUrl is required
const missing: TokenClientOptions = { logoutUrl: "/auth/logout" };
// @ts-expect-error unknown keys are an error
const unknown: TokenClientOptions = { refreshUrl: "/r", bogus: 1 };

function describe(e: TokenClientEvent): string {
  switch (e.type) {
    case "signedIn":
      return `in until ${e.expiresAt ?? "?"}`;
    case "refreshed":
      return `${e.source} ${e.expiresAt ?? "?"}`;
    case "refreshFailed":
      return `${e.error.code} ${e.error.status ?? ""} retry ${e.retryInMs ?? "never"}`;
    case "signedOut":
      return e.reason;
    case "stateChanged": {
      const s: TokenClientState = e.state;
      return s;
    }
  }
}

export async function app(): Promise<void> {
  await init();
  const client: TokenClient = await createTokenClient(options);
  const signedIn: boolean = await client.start();
  client.setSession({ access_token: "opaque", token_type: "Bearer", expires_in: 300 });
  const token: string | null = await client.getToken();
  const header: string | null = await client.authorizationHeader();
  const headers: Record<string, string> | null = await client.authorize("GET", new URL("https://api.example.com/x"));
  const res: Response = await client.fetch("/api/me", { method: "GET" });
  const again: Response = await client.fetch(new Request("/api/me"));
  const fresh: string = await client.refresh();
  const unsubscribe: () => void = client.subscribe((e) => console.log(describe(e)));
  const state: TokenClientState = client.state;
  const expiresAt: number | undefined = client.expiresAt;
  const refreshAt: number | undefined = client.refreshAt;
  const claims: Record<string, unknown> | undefined = client.claims();
  const admin: boolean = client.hasScope("admin");
  // @ts-expect-error state is read-only
  client.state = "active";
  // @ts-expect-error refreshAt is read-only
  client.refreshAt = 0;
  unsubscribe();
  await client.logout();
  client.dispose();
  void [signedIn, token, header, res, again, fresh, state, expiresAt, refreshAt, claims, admin];
  void [missing, unknown];
}

export function handle(e: unknown): string {
  if (e instanceof TokenClientError) {
    const code: "invalid_options" | "unsupported_environment" | "network" | "timeout" | "server_error"
      | "refresh_rejected" | "invalid_response" | "signed_out" | "disposed" = e.code;
    return `${e.name} ${code} ${e.status ?? ""} ${e.error ?? ""}`;
  }
  return String(e);
}
