// The reference server's refresh cookie as a plain HTTP client (no browser) must send it: the
// token and its anchor cookie (www/server/src/extract.rs ANCHOR_COOKIE: a refresh cookie
// without its anchor is ignored, so one planted by a sibling host does nothing).
import { createHash } from "node:crypto";

export const REFRESH_COOKIE = "__Secure-tw_refresh";
export const ANCHOR_COOKIE = "__Host-tw_anchor";

/** The anchor of refresh token `token` (tokens::refresh_anchor). */
export function anchorOf(token) {
  return createHash("sha256").update("tokenwarden refresh anchor\0").update(token).digest().subarray(0, 16).toString("base64url");
}

/** A `Cookie` header value carrying refresh token `token` as a browser would. */
export function refreshCookieHeader(token) {
  return `${REFRESH_COOKIE}=${token}; ${ANCHOR_COOKIE}=${anchorOf(token)}`;
}
