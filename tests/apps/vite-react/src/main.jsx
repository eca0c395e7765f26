import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { TokenProvider } from "tokenwarden/react";
import { App } from "./App.jsx";

const options = { refreshUrl: "/auth/refresh", logoutUrl: "/auth/logout" };

function Root() {
  // The tests unmount the provider to check it disposes its client.
  const [mounted, setMounted] = useState(true);
  // Test probe: 2 in a development build (Strict Mode runs effects twice), 1 in production.
  useEffect(() => {
    window.__rootEffectRuns = (window.__rootEffectRuns ?? 0) + 1;
  }, []);
  return (
    <>
      <button data-testid="toggle-provider" onClick={() => setMounted((m) => !m)}>
        {mounted ? "unmount provider" : "mount provider"}
      </button>
      {mounted && (
        <TokenProvider options={options}>
          <App />
        </TokenProvider>
      )}
    </>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <Root />
  </StrictMode>,
);
