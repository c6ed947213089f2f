# pollcast: the two commands a newcomer needs are `make run` and `make test`.

CARGO ?= cargo
# A development secret kept under target/, so `make run` and `make token`
# agree across restarts without any setup. Set POLLCAST_TOKEN_SECRET to
# use your own.
DEV_SECRET := target/dev-token-secret
SECRET = $${POLLCAST_TOKEN_SECRET:-$$(cat $(DEV_SECRET))}

.PHONY: run token test lint unit openapi schemathesis postgres browser-tools release browser clients recipes screenshots bench cluster soak fuzz

## Run the server on the embedded in-memory store (no setup; nothing durable).
## With DATABASE_URL set it uses Postgres and applies sql/ at start.
run: $(DEV_SECRET)
	POLLCAST_TOKEN_SECRET=$(SECRET) $(CARGO) run --release --bin pollcast

## Print a token for the README walk-through (topics demo:*).
token: $(DEV_SECRET)
	@POLLCAST_TOKEN_SECRET=$(SECRET) $(CARGO) run -q --release --bin pollcast -- token \
		--sub demo --publish 'demo:*' --subscribe 'demo:*'

$(DEV_SECRET):
	@mkdir -p target
	@head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $@

## Every test: formatting, lints, unit and integration tests (on a real
## Postgres, one database per test), the OpenAPI document, the live server
## against hostile input generated from it, clients nobody here wrote (npm
## eventsource, Python httpx-sse, curl through nginx, curl and httpx through
## squid), the recipes of docs/recipes.md run as written, and the web app
## in Chromium, EventSource conformance included.
test: lint postgres openapi schemathesis unit clients recipes browser

## Formatting, clippy, and the architecture rules of docs/architecture.md
## (no import cycles, each layer imports only the layers below it, only
## src/http knows HTTP, no file over 600 lines).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/check-architecture.py

postgres:
	@scripts/ensure-postgres.sh

openapi:
	@scripts/check-openapi.sh

## schemathesis (PyPI) fuzzes a release build on both stores (in memory,
## then Postgres on a fresh database) from openapi.yaml, stateful chains
## along its links included: no 5xx, every response as documented, invalid
## requests refused with a 4xx; SSE streams are read up to their first
## event. The seed is random per run and printed (SCHEMATHESIS_SEED=N
## replays one).
schemathesis:
	@scripts/schemathesis.sh

unit: postgres
	$(CARGO) test --workspace --all-targets

## Debian's chromium, nginx and squid, Node.js and the pinned npm packages
## (installed only when missing).
browser-tools:
	@scripts/ensure-browser-tools.sh

release:
	$(CARGO) build --release --bin pollcast

## The web app end to end (presenter, participants, the projector's
## screen, the admin console) and EventSource conformance, in headless Chromium.
browser: postgres browser-tools release
	cd tests/browser && node --test --test-concurrency=1 app.test.mjs screen.test.mjs conformance.test.mjs admin.test.mjs

## The README's screenshots (docs/): presenter, participant and the
## projector's screen, from real sessions in the browser tests.
screenshots: postgres browser-tools release
	cd tests/browser && UPDATE_SCREENSHOTS=1 node --test --test-concurrency=1 app.test.mjs screen.test.mjs admin.test.mjs

## Independent SSE clients: npm eventsource, Python httpx-sse, curl -N
## through nginx with its default (buffering) proxy settings, curl and httpx
## through Squid as a forward proxy with Debian's default config.
clients: postgres browser-tools release
	@scripts/clients.sh

## docs/recipes.md run as written: its sh blocks in one shell against a
## release server on a fresh database, its js blocks in headless Chromium,
## every output compared with the page (tests/recipes/recipes.test.mjs).
recipes: postgres browser-tools release
	node --test tests/recipes/recipes.test.mjs

## The benchmark suite (minutes; not part of make test): pollcast beside
## Nchan, pgbench and psql COPY on this machine; rewrites BENCHMARKS.md.
bench:
	python3 bench/suite.py

## Scale-out on one machine: three nodes (ports 8081-8083) on one Postgres
## database behind nginx on 127.0.0.1:8080, in the foreground until Ctrl-C.
## See docs/deploy.md; ports and database in scripts/cluster.sh.
cluster: $(DEV_SECRET)
	@scripts/cluster.sh

## Fuzz every hand-written parser of client input (cargo fuzz, libFuzzer;
## fuzz/README.md), FUZZ_SECONDS (30) per target. Not part of make test:
## its first build takes many minutes.
fuzz:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-30} scripts/fuzz.sh

## Soak test (not part of make test): first the fuzz targets, 5 minutes
## each (FUZZ_SECONDS), then an hour of three nodes on a fresh Postgres
## database under mixed legitimate and hostile load; checks that every
## acknowledged write is stored and every stream got each event once,
## samples memory, fds and /healthz, writes target/soak/report.md.
## SOAK_DURATION=300 for five minutes; other knobs in scripts/soak/__init__.py.
soak:
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-300} scripts/fuzz.sh
	@python3 scripts/soak
