# roamsign: `make run` serves the demo, `make test` runs every check. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml | sha256sum | cut -c1-12)
export ROAMSIGN_VAR_DIR ?= var

.PHONY: install vendor run test lint typecheck test-sqlite test-postgres test-pkcs11 test-parts test-sqlite-then-pkcs11 openapi dockerfile bench bench-scale bench-breakdown bench-floor bench-scaleout bench-p99 bench-issue19 bench-privacyidea clean

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The front-end files roamsign serves itself (Swagger UI for /docs), pinned, from the npm registry.
vendor:
	bash scripts/vendor-web.sh

install: $(STAMP) vendor

run: install
	bash scripts/run-demo.sh

lint: install
	$(BIN)/ruff check app tests bench migrations scripts examples
	$(BIN)/ruff format --check app tests bench migrations scripts examples
	$(BIN)/lint-imports

# The benchmarks too (strict, from pyproject.toml): they drift when a library's types change.
typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --explicit-package-bases bench

dockerfile:
	bash scripts/check-dockerfile.sh

# The passes may run at once (`make test`): none writes pytest's cache the others read.
PYTEST_FLAGS := -p no:cacheprovider

# SoftHSM2 (Debian) for tests/hsm: the pkcs11 key store is tested on a real PKCS#11 token.
# Chromium (Debian) for tests/browser: the pages are tested in a real headless browser.
test-sqlite: install
	bash scripts/ensure-softhsm.sh
	bash scripts/ensure-chromium.sh
	ROAMSIGN_TEST_DATABASE=sqlite $(BIN)/pytest $(PYTEST_FLAGS)

test-postgres: install
	bash scripts/ensure-postgres.sh
	ROAMSIGN_TEST_DATABASE=postgresql $(BIN)/pytest $(PYTEST_FLAGS) tests/integration tests/api tests/e2e

# The signing flow, CSC, lifecycle (issue, revoke, renew), race and e2e tests once more with the
# pkcs11 key store: one SoftHSM2 token for the run (tests/conftest.py), on PostgreSQL, where the
# race tests run (several server processes on one token).
PKCS11_TESTS := tests/api/test_signing_flow.py tests/api/test_csc.py tests/integration/test_csc.py \
	tests/api/test_lifecycle_applications.py tests/api/test_lifecycle_revocation.py \
	tests/integration/test_lifecycle_cli.py tests/e2e/test_flow.py tests/e2e/test_csc.py \
	tests/e2e/test_lifecycle_flow.py tests/e2e/test_races.py tests/e2e/test_lifecycle_races.py
test-pkcs11: install
	bash scripts/ensure-softhsm.sh
	bash scripts/ensure-postgres.sh
	ROAMSIGN_TEST_KEY_STORE=pkcs11 ROAMSIGN_TEST_DATABASE=postgresql $(BIN)/pytest $(PYTEST_FLAGS) $(PKCS11_TESTS)

# The passes run side by side, in two streams about equally long (SQLite then pkcs11; PostgreSQL):
# a pass keeps about one of the two cores busy, and the whole run took 23-25 minutes one after
# another. What they need is installed first, one script at a time (each may call apt-get).
# Each stream's output is shown when it ends; the run fails if either stream fails.
test: lint typecheck dockerfile test-parts
	@echo "make test: the SQLite + pkcs11 passes and the PostgreSQL pass run side by side;" \
		"each one's output appears when it ends"
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite-then-pkcs11 test-postgres

test-parts: install
	bash scripts/ensure-softhsm.sh
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-postgres.sh

test-sqlite-then-pkcs11: test-sqlite
	$(MAKE) --no-print-directory test-pkcs11

openapi: install
	$(BIN)/python -m scripts.generate_openapi > openapi.yaml

bench: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/flow.py

# Where one flow's CPU goes (domain + database, framework, thread hops), in one process.
bench-breakdown: install
	$(BIN)/python bench/breakdown.py

# The stack's floor: a flow's HTTP, database and e-mail work without roamsign's, next to roamsign.
bench-floor: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/floor.py --rounds 2

# One host against two, each in its own network namespace (root: `ip netns`), PostgreSQL in a
# third; then one OTP raced to both hosts at once, many times (exit 1 on a second signature).
bench-scaleout: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/scaleout.py

# The open loop's p99 at half the closed loop's maximum, five runs a channel, on PostgreSQL.
bench-p99: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/flow.py --db postgresql --open-runs 5

# Issue 19's figures in one go (~10 min): flow.py's five open runs, the floor, the scale-out
# and its race, with a summary table against the issue's targets; logs in var/bench-*/.
bench-issue19: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/issue19.py

# roamsign beside privacyIDEA 3.14 (OTP part only: privacyIDEA signs nothing), interleaved rounds
# on PostgreSQL, 2 workers each; privacyIDEA in its own .venv-privacyidea (made by the script,
# never a dependency of roamsign). Its default PIN hash (4 in flight: at 32 its requests wait
# past the client's 30 s here), then a light one (32 in flight), sync then gthread workers;
# ~20 min. See bench/README.md.
bench-privacyidea: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/privacyidea.py --rounds 2 --duration 20 --warmup 10 --pi-concurrency 4
	$(BIN)/python bench/privacyidea.py --rounds 2 --duration 20 --warmup 10 --pi-hash light
	$(BIN)/python bench/privacyidea.py --rounds 2 --duration 20 --warmup 10 --pi-hash light --pi-threads 4

# Flow cost vs 1/10,000/100,000 people and 0/100,000/1,000,000 historical requests (the 1M step
# on PostgreSQL only: on SQLite it alone takes ~5 min to build); see bench/README.md.
bench-scale: install
	bash scripts/ensure-postgres.sh
	$(BIN)/python bench/scale.py --sqlite-history-max 100000

clean:
	rm -rf $(VENV) .venv-tools var .pytest_cache .mypy_cache .ruff_cache
