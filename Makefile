# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test unit integration fault lint typecheck check deploy-check bench bench-consumer clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the gateway and the example consumers against a local RabbitMQ (started if needed)
run: $(STAMP)
	bash deploy/local/run.sh

## test: every test (unit, integration, fault) against a real RabbitMQ
test: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not integration" $(PYTEST_ARGS)

integration: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" $(VENV)/bin/python -m pytest -m integration $(PYTEST_ARGS)

fault: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" $(VENV)/bin/python -m pytest -m fault $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway consumers tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck

deploy-check: $(STAMP)
	bash deploy/check.sh

## bench: load the running stack and compare with raw confirmed publishing (prints a JSON line)
bench: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" $(VENV)/bin/python tests/bench/gateway_bench.py $(BENCH_ARGS)

bench-consumer: $(STAMP)
	AMQP_URL="$$(bash deploy/local/broker.sh)" $(VENV)/bin/python tests/bench/consumer_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache .hypothesis
