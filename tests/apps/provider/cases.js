// Two TokenProvider cases the fixture apps do not reach (tests/apps/provider.test.mjs bundles
// this file with the packed tokenwarden and the Vite app's React).
import { createElement as h, useState } from "react";
import { createRoot } from "react-dom/client";
import { TokenProvider, useSession } from "tokenwarden/react";
import { createTokenClient } from "tokenwarden";

window.providerErrors = [];
const onError = (name) => (e) => window.providerErrors.push(`${name}: ${e && e.code}`);

function Show({ id }) {
  const s = useSession();
  return h("p", { "data-testid": id }, s.state);
}

// New options, and in the same commit a child that mounts (here: a new key) and subscribes to
// the client it was rendered with, which the provider's cleanup has just disposed.
function OptionsChange() {
  const [n, setN] = useState(0);
  return h(
    "div",
    null,
    h("button", { "data-testid": "next-options", onClick: () => setN((k) => k + 1) }, "new options"),
    h("span", { "data-testid": "options-n" }, String(n)),
    h(
      TokenProvider,
      { options: { refreshUrl: "/auth/refresh", channelName: `case-${n}` }, onError: onError("options") },
      h(Show, { key: n, id: "options-state" }),
    ),
  );
}

// `client={null}` while the app is still making its client: "loading", and no error.
function NullClient() {
  const [client, setClient] = useState(null);
  const make = async () => setClient(await createTokenClient({ refreshUrl: "/auth/refresh", channelName: "own" }));
  return h(
    "div",
    null,
    h("button", { "data-testid": "make-client", onClick: make }, "make the client"),
    h(TokenProvider, { client, onError: onError("null") }, h(Show, { id: "null-state" })),
  );
}

createRoot(document.getElementById("root")).render(h("div", null, h(OptionsChange), h(NullClient)));
