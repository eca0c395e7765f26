// The provider's counters the OIDC suites assert on ("no reuse at the provider") must be able
// to count: read against the library's own error for a refresh token presented again.
import { test } from "node:test";
import assert from "node:assert/strict";
import { errors } from "oidc-provider";
import { isRefreshReuse } from "./provider.mjs";

test("a refresh token presented again counts as reuse; other grant errors do not", () => {
  // What oidc-provider's refresh_token grant throws for a used token (lib/actions/grants/refresh_token.js).
  assert.equal(isRefreshReuse(new errors.InvalidGrant("refresh token already used")), true);
  assert.equal(isRefreshReuse(new errors.InvalidGrant("grant request is invalid")), false);
  assert.equal(isRefreshReuse(new errors.InvalidGrant("refresh token not found")), false);
  assert.equal(isRefreshReuse(undefined), false);
});
