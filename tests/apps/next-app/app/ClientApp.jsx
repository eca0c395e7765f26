"use client";
import { TokenProvider } from "tokenwarden/react";
import { App } from "./App.jsx";

const options = { refreshUrl: "/auth/refresh", logoutUrl: "/auth/logout" };

export function ClientApp() {
  return (
    <TokenProvider options={options}>
      <App />
    </TokenProvider>
  );
}
