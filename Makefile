# Keel: the two commands a new user needs are `make run` and `make test`.
CARGO ?= cargo
DATA_DIR ?= keel-data
STORE_MEMBERS ?= 1

.PHONY: deps build run test lint unit integration fmt

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

## Builds and runs `keel up`: a one-member store on 127.0.0.1:2379 (STORE_MEMBERS=3 for a local
## three-member cluster on 2379/22379/32379); data in $(DATA_DIR)/, resumed on the next run.
run: deps
	$(CARGO) run --bin keel -- up --data-dir $(DATA_DIR) --store-members $(STORE_MEMBERS)

## Everything CI checks: formatting, clippy, unit and integration tests.
test: deps lint
	$(CARGO) build --workspace --all-targets
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
