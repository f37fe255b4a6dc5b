# yahaml-voice: `make run` serves the embedded default, `make test` runs everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: release run test test-fast bench screenshots soak natlab deploy-test deploy-test-multihost turn lint typecheck schema system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

## Serve the embedded default on 127.0.0.1:8080 (in-memory state, open auth, SFU workers as children).
run: $(STAMP)
	$(BIN)/yahaml-voice serve --host 127.0.0.1 --port 8080 $(if $(CONFIG),--config $(CONFIG))

## Install what the tests need (Debian packages when root) and run the whole suite.
# Two pytest workers (pytest-xdist): the suite mostly waits on real audio, browsers and
# Ansible. A whole file goes to one worker (module fixtures start once); the files that
# touch the machine (natlab, cascade hosts: their own namespaces and subnets; the deploy
# test: the host's own stack) do not collide with each other. JOBS=0: one process.
JOBS ?= 2
XDIST = $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadfile)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) --durations=25 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) -m "not browser and not natlab and not deploy" $(PYTEST_ARGS)

system-deps:
	bash .ci/system-deps

bench: $(STAMP) system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

## The README's pictures of a running net (the NCS console and the operator view at 1000
## and 390 px): a real server, a staged net, Chromium; writes docs/img/net-*.png.
screenshots: $(STAMP) system-deps
	$(BIN)/python -m tests.browser.screenshots

## The full soak (not in CI): one net room, 300 members for 10 minutes on a real server and
## SFU worker; JSON and PNG land in bench/results/soak-<time>.*. SOAK_ARGS overrides, e.g.
## SOAK_ARGS="--participants 60 --duration 120".
soak: $(STAMP)
	$(BIN)/python -m bench soak -- $(SOAK_ARGS)

natlab: $(STAMP) system-deps
	$(BIN)/python -m tests.natlab.matrix

deploy-test: $(STAMP) system-deps
	bash tests/deploy/run.sh
	bash tests/deploy/multihost.sh

## The multi-host example on podman containers as hosts (tests/deploy/multihost.sh).
deploy-test-multihost: $(STAMP) system-deps
	bash tests/deploy/multihost.sh

## Release artifacts of the version in pyproject.toml (the one place it is written): the
## sdist, the wheel built from that sdist (so a file the sdist misses fails here, not on a
## host) and SHA256SUMS, in $(DIST). Refuses a version CHANGELOG.md has no entry for.
DIST ?= dist
release: $(STAMP)
	@v=$$($(BIN)/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])'); \
	grep -q "^## $$v " CHANGELOG.md || { echo "release: CHANGELOG.md has no '## $$v' entry" >&2; exit 1; }; \
	rm -rf "$(DIST)" && $(BIN)/python -m build -q --outdir "$(DIST)" . >/dev/null && \
	cd "$(DIST)" && sha256sum "yahaml_voice-$$v.tar.gz" "yahaml_voice-$$v-py3-none-any.whl" > SHA256SUMS && \
	cat SHA256SUMS

## coturn next to `make run`, rendered from the same config.
turn: $(STAMP)
	$(BIN)/yahaml-voice turn --run $(if $(CONFIG),--config $(CONFIG))

## TypeScript (pinned in client/package-lock.json) for `tsc --noEmit` over the client's JSDoc.
CLIENT_TOOLS := client/node_modules/.installed

$(CLIENT_TOOLS): client/package.json client/package-lock.json
	npm ci --prefix client --no-audit --no-fund
	touch $@

lint: $(STAMP) $(CLIENT_TOOLS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	client/node_modules/.bin/tsc --noEmit -p client

typecheck: $(STAMP)
	$(BIN)/mypy -p yahaml_voice

## docs/protocol.schema.json and client/protocol-types.js (JSDoc typedefs) from the wire
## models in yahaml_voice/core/protocol.py; tests/test_protocol_schema.py fails when stale.
schema: $(STAMP)
	$(BIN)/python -m yahaml_voice.core.schema

clean:
	rm -rf $(VENV) build *.egg-info client/node_modules
