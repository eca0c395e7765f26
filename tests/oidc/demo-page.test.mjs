// The demo page (www/demo, what `make demo-oidc` serves) in upstream mode, in headless
// Chromium under the server's strict CSP: it shows the provider's sign-in button instead of
// the password form, signs in through the provider's real pages, calls /api/me with the
// provider's token, and logs out. The environment fails a test on any CSP violation of our
// pages (see env.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { useUpstream, throughProvider, DEMO_DIR } from "./env.mjs";

const env = useUpstream({ accessTokenTtl: 30, wwwDir: DEMO_DIR, appPath: "/" });

test("the demo page shows the provider's sign-in button under its CSP and signs in through the provider", async () => {
  const { base, provider } = env;
  const context = await env.newContext();
  const page = await env.newPage(context);
  const response = await page.goto(base + "/");
  assert.match(response.headers()["content-security-policy"] || "", /script-src 'self' 'wasm-unsafe-eval'/);
  await page.locator("#wasm-status").filter({ hasText: "wasm loaded" }).waitFor();
  const button = page.locator("#provider-sign-in");
  await button.waitFor({ state: "visible" });
  assert.equal(await page.locator("#login-form").isVisible(), false, "no password form in upstream mode");

  // The page's start() disables the button while its refresh is in flight (state
  // "refreshing"), so whether it is enabled right after "wasm loaded" depends on timing (it
  // failed once in CI this way): a click racing that toggle lands on a disabled button. Wait
  // for start() to settle, as a person would see the enabled button: its message, not the
  // state, which reads "signedOut" already while start() asks the other tabs, before its
  // refresh.
  await page.locator("#message").filter({ hasText: "No session yet" }).waitFor({ timeout: 15000 });
  await page.locator("#state").filter({ hasText: "signedOut" }).waitFor({ timeout: 15000 });
  assert.equal(await button.isEnabled(), true, "the provider's button is live after start()");
  const exchanges = provider.stats.codeGrants;
  await button.click();
  await throughProvider(page, { login: "judy" });
  await page.waitForURL((u) => u.origin === base && u.pathname === "/", { timeout: 15000 });
  await page.locator("#state").filter({ hasText: "active" }).waitFor({ timeout: 15000 });
  assert.equal(provider.stats.codeGrants - exchanges, 1, "one code exchange");
  assert.equal(new URL(page.url()).searchParams.get("login_error"), null);

  await page.click("#call-api");
  await page.locator("#api-result").filter({ hasText: "judy" }).waitFor({ timeout: 15000 });

  const revocations = provider.stats.revocations;
  await page.click("#logout");
  // RP-initiated logout: the page goes to the provider's end-session page.
  await page.waitForURL((u) => u.origin === provider.issuer, { timeout: 15000 });
  assert.equal(provider.stats.revocations - revocations, 1, "logout revoked at the provider");
  assert.equal(provider.liveRefreshTokens("judy"), 0);
});
