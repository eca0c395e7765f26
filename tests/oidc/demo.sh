#!/usr/bin/env bash
# `make demo-oidc`: a local OpenID Provider (oidc-provider, tests/oidc/provider.mjs) on
# $OIDC_ADDR and the reference server in upstream mode on $DEMO_ADDR. The page shows the
# provider's sign-in button; the provider's development login page accepts any login and
# password. The client secret is random per run and reaches both through the environment.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO_ADDR=${DEMO_ADDR:-127.0.0.1:8080}
OIDC_ADDR=${OIDC_ADDR:-127.0.0.1:8081}
scripts/setup.sh npm tests/oidc

TW_OIDC_CLIENT_SECRET=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
export TW_OIDC_CLIENT_SECRET
TW_OIDC_TOKEN_KEY=${TW_OIDC_TOKEN_KEY:-$(head -c 32 /dev/urandom | base64)}
export TW_OIDC_TOKEN_KEY

node tests/oidc/provider.mjs --port "${OIDC_ADDR##*:}" \
  --redirect-uri "http://$DEMO_ADDR/auth/callback" --post-logout-uri "http://$DEMO_ADDR/" \
  --access-ttl 30 &
provider=$!
trap 'kill "$provider" 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 50); do
  node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
    "http://$OIDC_ADDR/.well-known/openid-configuration" && break
  sleep 0.2
done

echo "tokenwarden upstream demo: http://$DEMO_ADDR/   (provider http://$OIDC_ADDR: any login / any password; Ctrl-C stops)"
./target/release/tokenwarden-server --bind "$DEMO_ADDR" --memory-store \
  --oidc-issuer "http://$OIDC_ADDR" --oidc-client-id tokenwarden-app \
  --oidc-redirect-uri "http://$DEMO_ADDR/auth/callback" \
  --oidc-allowed-return "http://$DEMO_ADDR/" --oidc-post-logout-uri "http://$DEMO_ADDR/"
