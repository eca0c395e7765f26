# tokenwarden — the two commands of the quick start are `make demo` and
# `make test`. Both install what is missing (scripts/setup.sh) and skip
# what is already there.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CHROMEDRIVER ?= /usr/bin/chromedriver
export NEXT_TELEMETRY_DISABLED := 1
DEMO_ADDR ?= 127.0.0.1:8080

.PHONY: demo test setup pkg pkg-dev lint unit pg-test browser size e2e multi apps corpus bench fuzz load clean

## demo: build the package, start the reference server on $(DEMO_ADDR), print the URL
demo: setup pkg
	cargo build --release -p tokenwarden-server
	@echo "tokenwarden demo: http://$(DEMO_ADDR)/   (user demo / password demo; Ctrl-C stops)"
	./target/release/tokenwarden-server --bind $(DEMO_ADDR)

## test: every test layer, in order of cost
test: setup lint unit pg-test browser pkg size e2e multi apps corpus
	@echo "make test: all layers passed"

setup:
	scripts/setup.sh rust
	scripts/setup.sh browser

pkg:
	scripts/build-pkg.sh --release

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown -p tokenwarden --all-targets -- -D warnings

## unit: native tests (core, server)
unit:
	cargo test --workspace

## pg-test: the server's PostgreSQL tests (store contract, migrations, two pools racing, shared
## keys) against a throw-away PostgreSQL 15 on 127.0.0.1 (scripts/pg.sh starts and stops it);
## TW_REQUIRE_PG=1 makes a missing DATABASE_URL a failure instead of "NOT RUN"
pg-test:
	scripts/setup.sh pg
	TW_REQUIRE_PG=1 scripts/pg.sh run cargo test -p tokenwarden-server --lib pg_

## browser: wasm-bindgen-test in headless Chromium
browser:
	wasm-pack test --headless --chrome

## size: the npm payload a browser downloads stays within bench/size-budget.json
size: pkg
	node scripts/size-budget.mjs

## e2e: the product against the reference server, several tabs, real Chromium
e2e: pkg
	tests/e2e/run.sh

## multi: two server instances on one PostgreSQL behind a round-robin proxy (real Chromium)
multi: pkg
	tests/multi/run.sh

## apps: Vite + React and Next.js fixture apps built from the npm pack of pkg/
apps: pkg
	tests/apps/run.sh

## corpus: replay the fuzz corpora natively (fast, deterministic)
corpus:
	cargo test --test fuzz_corpus

bench: setup pkg
	bench/run.sh

fuzz:
	fuzz/run.sh

load:
	tools/load/run.sh

clean:
	cargo clean
	rm -rf pkg
