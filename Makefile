# Keel: the two commands a new user needs are `make run` and `make test`.
CARGO ?= cargo
DATA_DIR ?= keel-data

.PHONY: deps build run test lint unit integration fmt

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

## Builds and starts a one-member store on 127.0.0.1:2379 (peer 2380); data in $(DATA_DIR)/.
run: deps
	$(CARGO) run --bin keel -- store --name default --data-dir $(DATA_DIR) \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster default=http://127.0.0.1:2380

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
