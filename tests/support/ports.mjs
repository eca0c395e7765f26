// A free port for a server whose URL must be known before it starts (a
// provider's redirect URI, an engine's origin).
//
// Picked below the kernel's ephemeral range, not with `listen(0)`: a port the
// kernel handed out and that was closed again can be handed to any `--port 0`
// server (or outgoing connection) of the other `make products` lane before our
// server binds it. That race made tests/apps fail once (EADDRINUSE, and the
// tests met a reference server on the app's port); tests/apps/run.sh picks the
// same way.
import { createServer } from "node:net";
import { readFileSync } from "node:fs";

const picked = new Set();

function ephemeralLow() {
  try {
    const low = +readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0];
    if (low > 2048) return low;
  } catch {}
  return 32768;
}

function tryPort(port) {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/**
 * A port of 127.0.0.1 that was free a moment ago, in [low - 12000, low) of the ephemeral
 * range, never the same twice in a process nor one of `avoid` (ports picked by other
 * processes: tests/apps/run.sh calls this once per app).
 */
export async function freePort({ avoid = [] } = {}) {
  for (const p of avoid) picked.add(p);
  const low = ephemeralLow();
  const lowest = Math.max(1025, low - 12000);
  for (let i = 0; i < 200; i++) {
    const port = lowest + Math.floor(Math.random() * (low - lowest));
    if (picked.has(port)) continue;
    picked.add(port);
    if (await tryPort(port)) return port;
  }
  throw new Error(`no free port of 127.0.0.1 below ${low} after 200 tries`);
}
