import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The reference server (login, refresh, logout, /api/me). run.sh sets
// TW_SERVER_URL when it starts `vite preview`.
const server = process.env.TW_SERVER_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  // Same origin for the app and the auth endpoints: the refresh cookie is
  // SameSite=Strict, Path=/auth, and the Bearer goes to the page origin only.
  server: { proxy: { "/auth": server, "/api": server } },
  preview: { proxy: { "/auth": server, "/api": server } },
});
