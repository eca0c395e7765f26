# tokenwarden — the two commands of the quick start are `make demo` and
# `make test`. Both install what is missing (scripts/setup.sh) and skip
# what is already there.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CHROMEDRIVER ?= /usr/bin/chromedriver
export NEXT_TELEMETRY_DISABLED := 1
DEMO_ADDR ?= 127.0.0.1:8080

.PHONY: demo demo-oidc demo-https test setup pkg pkg-dev lint types unit pg-test browser browser-chromium \
	browser-firefox browser-webkit size e2e chaos multi oidc engines apps products corpus bench fuzz load clean

## demo: build the package, start the reference server on $(DEMO_ADDR), print the URL
demo: setup pkg
	cargo build --release -p tokenwarden-server
	@echo "tokenwarden demo: http://$(DEMO_ADDR)/   (user demo / password demo; Ctrl-C stops; another port: make demo DEMO_ADDR=127.0.0.1:8091)"
	./target/release/tokenwarden-server --bind $(DEMO_ADDR)

## demo-oidc: the same page signing in through a local OpenID Provider (upstream mode)
demo-oidc: setup pkg
	cargo build --release -p tokenwarden-server
	DEMO_ADDR=$(DEMO_ADDR) tests/oidc/demo.sh

## demo-https: the demo over HTTPS (what Safari needs: it drops Secure cookies on http).
## A self-signed certificate is generated at start; TLS_CERT/TLS_KEY use yours (mkcert).
demo-https: setup pkg
	cargo build --release -p tokenwarden-server
	@echo "tokenwarden demo: https://$(DEMO_ADDR)/   (user demo / password demo; Ctrl-C stops)"
	./target/release/tokenwarden-server --bind $(DEMO_ADDR) --tls \
	  $(if $(TLS_CERT),--tls-cert $(TLS_CERT) --tls-key $(TLS_KEY))

## test: every test layer, in order of cost; the product suites (e2e, oidc, apps, engines,
## multi) run in two lanes side by side (tests/products.sh): they mostly wait on browsers
test: setup lint types unit pg-test corpus browser pkg size products
	@echo "make test: all layers passed"

## setup: everything the two commands need (toolchains, wasm-bindgen-cli, geckodriver, the
## Debian browsers and PostgreSQL, the npm trees), installing only what is missing
setup:
	scripts/setup.sh all

pkg:
	scripts/build-pkg.sh --release

## pkg-dev: wasm-pack's debug build of pkg/ (unminified; installs wasm-pack once)
pkg-dev:
	scripts/build-pkg.sh --dev

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown -p tokenwarden --all-targets -- -D warnings
	cargo fmt --manifest-path bench/floor/Cargo.toml --check
	cargo clippy --target wasm32-unknown-unknown --manifest-path bench/floor/Cargo.toml \
	  --target-dir target/floor -- -D warnings

## types: tsc --strict over the hand-written .d.ts files, against typed usage files
types:
	scripts/setup.sh npm tests/types
	tests/types/node_modules/.bin/tsc -p tests/types/tsconfig.json

## unit: native tests (policy, the client on the fake shell, server)
unit:
	cargo test --workspace

## pg-test: the server's PostgreSQL tests (store contract, migrations, two pools racing, shared
## keys) against a throw-away PostgreSQL 15 on 127.0.0.1 (scripts/pg.sh starts and stops it);
## TW_REQUIRE_PG=1 makes a missing DATABASE_URL a failure instead of "NOT RUN". `--workspace`
## (only the server's lib has pg_ tests) keeps `make unit`'s feature set: `-p` alone rebuilt
## 71 crates (48 s on a fresh machine)
pg-test:
	scripts/setup.sh pg
	TW_REQUIRE_PG=1 scripts/pg.sh run cargo test --workspace --lib pg_

## browser: wasm-bindgen-test in Chromium, Firefox and WebKit (the same tests/browser.rs)
browser: browser-chromium browser-firefox browser-webkit

browser-chromium:
	tests/engines/wasm-bindgen-test.sh chromium

browser-firefox:
	tests/engines/wasm-bindgen-test.sh firefox

## WebKitGTK's MiniBrowser through WebKitWebDriver (the runner's SAFARIDRIVER), on Xvfb
browser-webkit:
	tests/engines/wasm-bindgen-test.sh webkit

## size: the npm payload a browser downloads stays within bench/size-budget.json; the
## layout check that keeps wasm-opt's --low-memory-unused safe (scripts/check-low-memory.mjs)
## and the round trip of the .wasm embedded in the entry (scripts/embed-wasm.mjs)
size: pkg
	node scripts/size-budget.mjs
	node --test scripts/check-low-memory.test.mjs scripts/embed-wasm.test.mjs scripts/size-budget.test.mjs

## e2e: the product against the reference server, several tabs, real Chromium
e2e: pkg
	tests/e2e/run.sh

## multi: two server instances on one PostgreSQL behind a round-robin proxy (real Chromium)
multi: pkg
	tests/multi/run.sh

## oidc: upstream mode against a real OpenID Provider (oidc-provider), real Chromium
oidc: pkg
	tests/oidc/run.sh

## chaos: 300 refresh cycles while 30 % of refreshes fail (about 5 min; kept out of `make
## test` for its 30-minute budget; .ci/run runs it after `make test`)
chaos: setup pkg
	tests/e2e/run.sh chaos

## products: e2e, oidc, apps, engines and multi in two lanes side by side, against the reference
## server's dev build (scripts/test-server.sh; TW_SERVER_PROFILE=release for the release one)
products: pkg
	tests/products.sh

## engines: one end-to-end list in Chromium, Firefox and WebKit, plus the Vite + React app
engines: pkg
	tests/engines/run.sh

## apps: Vite + React and Next.js fixture apps built from the npm pack of pkg/
apps: pkg
	tests/apps/run.sh

## corpus: replay the fuzz corpora natively (fast, deterministic). `--workspace` keeps `make
## unit`'s feature set, so nothing is rebuilt (without it: 31 s of rebuilding)
corpus:
	cargo test --workspace --test fuzz_corpus

bench: setup pkg
	bench/run.sh

fuzz:
	fuzz/run.sh

load:
	tools/load/run.sh

clean:
	cargo clean
	rm -rf pkg
