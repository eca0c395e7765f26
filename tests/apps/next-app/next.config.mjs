// The reference server (login, refresh, logout, /api/me), proxied so the app
// and its auth endpoints share one origin: the refresh cookie is
// SameSite=Strict, Path=/auth, and the Bearer goes to the page origin only.
// Rewrites are resolved at build time: run.sh sets TW_SERVER_URL for `next build`.
const server = process.env.TW_SERVER_URL ?? "http://127.0.0.1:8080";

/** @type {import('next').NextConfig} */
const nextConfig = {
  // The suite builds this app with Turbopack and with webpack, each into its own directory.
  distDir: process.env.TW_NEXT_DIST_DIR || ".next",
  // Fixture layout only: tests/apps/package-lock.json (the test runner's) sits
  // above this app, and Next would take tests/apps/ for the workspace root.
  turbopack: { root: import.meta.dirname },
  async rewrites() {
    return [
      { source: "/auth/:path*", destination: `${server}/auth/:path*` },
      { source: "/api/me", destination: `${server}/api/me` },
    ];
  },
};

export default nextConfig;
