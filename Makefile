# The two commands of the README, and what they need. Each installs what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-tools console-screenshots lint bench kafka-start kafka-stop clean

demo: $(STAMP)
	$(BIN)/streams demo

test: $(STAMP) test-tools
	$(BIN)/ruff check .
	$(BIN)/mypy --strict streams connectors sandbox pipelines
	$(BIN)/streams schemas check
	$(BIN)/pytest

# kcat: the tests' second Kafka client, the one that writes a header name's bytes as given.
# prometheus (with promtool): the alert rules are checked and evaluated by a real Prometheus
# (tests/integration/test_prometheus_alerts.py). Debian's package does not start its service in a
# container (policy-rc.d); without recommends, no node exporter comes along.
# chromium and chromium-driver (Debian's): the console's browser test drives them with selenium.
test-tools:
	@command -v kcat >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; \
	  else echo "kcat is needed by the tests (Debian package kcat: apt-get install kcat)" >&2; exit 1; fi; }
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus >/dev/null; \
	  else echo "prometheus and promtool are needed by the tests (Debian package prometheus: apt-get install prometheus)" >&2; \
	    exit 1; fi; }
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium and chromedriver are needed by the console's browser test (Debian packages chromium, chromium-driver: apt-get install chromium chromium-driver)" >&2; \
	    exit 1; fi; }

# The README's console screenshots, taken by the browser test against a real pipeline.
console-screenshots: $(STAMP) test-tools
	STREAMS_CONSOLE_SCREENSHOTS=docs/images $(BIN)/pytest tests/integration/test_console.py -k outage -q

lint: $(STAMP)
	$(BIN)/ruff check .

# The benchmark (bench/README.md): make bench, or make bench BENCH_ARGS=--quick
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

kafka-start: $(STAMP)
	$(BIN)/streams kafka start

kafka-stop: $(STAMP)
	$(BIN)/streams kafka stop

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "Java 17 is needed to run the local Kafka broker (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch the Kafka broker jars (apt-get install maven)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	-bash scripts/kafka.sh stop
	-bash scripts/apicurio.sh stop
	rm -rf $(VENV) .local
