// A typed use of tokenwarden/react (checked by tsc --strict with the rest).
import { createElement, type ReactElement } from "react";
import { TokenProvider, useSession, useTokenClient, type Session, type SessionState } from "../../js/react.js";
import type { TokenClient } from "../../js/index.js";

function Status(): ReactElement {
  const client: TokenClient | null = useTokenClient();
  const session: Session = useSession();
  const state: SessionState = session.state;
  const refreshAt: number | undefined = session.refreshAt;
  const expiresAt: number | undefined = session.expiresAt;
  void client;
  return createElement("p", null, `${state} ${expiresAt ?? ""} ${refreshAt ?? ""}`);
}

export function App(): ReactElement {
  return createElement(
    TokenProvider,
    { options: { refreshUrl: "/auth/refresh" }, onError: (e: unknown) => console.error(e) },
    createElement(Status),
  );
}
