// Helpers of the timed multi-tab runs, shared by tests/e2e and tests/engines (no dependencies).

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Sleeps until `ms` of the host's running time have passed, in 100 ms steps, and reports the
 * host's stalls: steps that came back over a second late, so that this process (and, with it,
 * the server and the browser on the same machine) was not running. A stalled host stretches a
 * timed run without anything being due meanwhile; the run's figures are then taken over the
 * time the host ran. Returns `{ stalledMs, stalls: [[epoch ms, ms]] }`.
 */
export async function sleepWatched(ms) {
  const start = Date.now();
  const host = watchStalls();
  for (let ran = 0; ran < ms; ran = Date.now() - start - host.stalledMs) await sleep(Math.min(100, ms - ran));
  host.stop();
  return { stalledMs: host.stalledMs, stalls: host.stalls };
}

/**
 * What happened during a timed run, one line per event, for a failure's output: the refresh
 * calls and every API call that was not 200 as the server logged them, and every tab call that
 * was not 200 or took over a second (`traces[i]`: the page loop's `[epoch ms, ms, outcome]`).
 */
export function runStory(log, traces, since) {
  const rows = [];
  for (const e of log) {
    if (e.t < since || (e.path === "/api/me" && e.status === 200)) continue;
    const what = [e.bearer !== "none" && e.bearer, e.dpop && "dpop", e.error].filter(Boolean).join(" ");
    rows.push([e.t, `server ${e.method} ${e.path} ${e.status} ${what}`.trimEnd()]);
  }
  traces.forEach((trace, i) => {
    for (const [t, took, outcome] of trace) {
      if (outcome !== 200 || took > 1000) rows.push([t, `tab ${i}: call -> ${outcome} in ${took} ms`]);
    }
  });
  rows.sort((a, b) => a[0] - b[0]);
  return rows.map(([t, line]) => `+${String(t - since).padStart(6)} ms  ${line}`).join("\n");
}

/** Runs `check`; when it throws, prints `story()` first (what the run did), then rethrows. */
export function explainFailure(check, story) {
  try {
    check();
  } catch (e) {
    console.log(`--- what the run did ---\n${story()}\n---`);
    throw e;
  }
}

/**
 * Watches the host for stalls while a test waits on something else: a 100 ms interval that
 * came back over a second late means this process (and the server and browser beside it) was
 * not running. `stalledMs` is the stalled time so far; `stop()` ends the watch and returns the
 * watcher. A timing bound measured in wall time is then checked on the time the host ran.
 */
export function watchStalls() {
  const STEP = 100;
  const stalls = [];
  let last = Date.now();
  // Every look at the clock counts, not only the interval's: after a stall another timer (the
  // caller's own) may run first, and must already see the stall.
  const look = () => {
    const now = Date.now();
    if (now - last > STEP + 1000) stalls.push([last, now - last - STEP]);
    last = now;
  };
  const id = setInterval(look, STEP);
  return {
    stalls,
    get stalledMs() {
      look();
      return stalls.reduce((s, [, d]) => s + d, 0);
    },
    stop() {
      look();
      clearInterval(id);
      return this;
    },
  };
}
