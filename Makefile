# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install tools infra-up infra-down infra-status test test-unit fuzz demo lint clean bench \
	compose-smoke lock backup restore faults cluster-rolling history

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON))"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17+ is needed for Kafka: apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is needed to fetch Kafka: apt-get install -y maven"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "from scripts.infra import ensure_kafka_jars; ensure_kafka_jars()"
	touch $(STAMP)

# tools the suite needs beyond Python: promtool checks ops/prometheus (Debian's prometheus);
# wrk, the compiled HTTP load generator of `make bench` (Debian's wrk)
tools:
	@command -v promtool >/dev/null || sh scripts/install_promtool.sh
	@command -v wrk >/dev/null || sh scripts/install_wrk.sh
	@command -v chromium >/dev/null || sh scripts/install_chromium.sh

# the console's browser assets (axe-core for tests/console), from npm with its lock file: no CDN
CONSOLE_ASSETS := services/console/node_modules/.package-lock.json
$(CONSOLE_ASSETS): services/console/package.json services/console/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the console's assets: apt-get install -y npm"; exit 1; }
	cd services/console && npm ci --no-audit --no-fund

install: $(STAMP) tools $(CONSOLE_ASSETS)

# TKM_KAFKA_BROKERS=3 make infra-up: a three-broker KRaft cluster (docs/cluster.md)
infra-up: install
	$(PY) -m scripts.infra up

infra-down:
	@if [ -x $(PY) ]; then $(PY) -m scripts.infra down; else echo "nothing was running"; fi

infra-status: install
	$(PY) -m scripts.infra status

# The three-broker cluster's rolling restart under a write load (docs/cluster.md): minutes, not
# part of `make test`; needs TKM_POSTGRES_URL (eval "$$(python -m scripts.infra env)")
cluster-rolling: install
	$(PY) -m tests.shared.integration.test_kafka_cluster

# The suite starts its own Kafka and Postgres on free ports and stops them at the end.
# two pytest processes side by side, each with its own broker and Postgres: the tests that
# mostly wait (marked `long` in tests/conftest.py) and the others; the long ones' output follows
test: install
	@long_tmp=$$(mktemp -d); \
	$(PY) -m pytest -q --durations=10 -m long --basetemp=$$long_tmp/t > $$long_tmp/long.log 2>&1 & \
	long=$$!; \
	$(PY) -m pytest -q --durations=25 -m "not long"; rest=$$?; \
	wait $$long; lr=$$?; \
	echo "--- the long tests, run beside the others:"; cat $$long_tmp/long.log; rm -rf $$long_tmp; \
	test $$rest -eq 0 && test $$lr -eq 0

# The property-based run of `make test` (tests/fuzz: every operation of the four services, a few
# derandomized examples each), longer: many examples and schemathesis' coverage phase.
fuzz: install
	TKM_FUZZ_EXAMPLES=$${TKM_FUZZ_EXAMPLES:-60} $(PY) -m pytest -q tests/fuzz

# The fault suite (scripts/faults.py, docs/operations.md "Fault suite"): its own Kafka and
# Postgres, the services, a seeded workload, kill -9 / SIGSTOP faults, conservation checks.
# FAULTS_ARGS="--brokers 3 --instances 2 --seed 7"; its short variant runs in `make test`.
faults: install
	$(PY) -m scripts.faults $(FAULTS_ARGS)

# every path of issue 16 beside its ceiling and the eventsourcing peer, in one run against a
# Kafka and Postgres of its own: bench/results/<date>.json and .md (bench/README.md);
# e.g. make bench BENCH_ARGS="--size 100000,1000000 --year"
bench: install
	$(PY) -m bench $(BENCH_ARGS)

test-unit: install
	$(PY) -m pytest -q -m "not integration"

demo: install
	$(PY) -m scripts.cli demo $(DEMO_ARGS)

# A past programme year loaded as it happened (docs/history.md): fresh Kafka and Postgres under
# .infra/history, the four services, the seeded 2021 shape (664 TKS, 6,250 groups of 16) written
# as CSV files and loaded with `tkm load-history`, the figures read back and the wall time.
# HISTORY_ARGS="--scale 0.04" for a small run.
history: install
	$(PY) -m scripts.cli history-demo $(HISTORY_ARGS)

# docker-compose.yml for real (podman + docker-compose, stand-in images where no registry is
# reachable; README "make compose-smoke"): minutes, root, not part of `make test`
compose-smoke: install
	$(PY) -m scripts.compose_smoke $(SMOKE_ARGS)

# requirements.lock: pyproject's runtime dependencies, with hashes, at the versions installed here
lock: install
	@test -x $(VENV)/bin/uv || $(PY) -m pip install --quiet uv
	$(VENV)/bin/pip list --format=freeze --exclude-editable > .cache/tested-versions.txt
	$(VENV)/bin/uv pip compile pyproject.toml -c .cache/tested-versions.txt --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header \
	  --annotation-style line -o requirements.lock
	sed -i 's|, -c .cache/tested-versions.txt||; s|-c .cache/tested-versions.txt, ||; s|# via -c .cache/tested-versions.txt$$|# via the tested set|' requirements.lock
	sed -i '1i # The runtime dependencies of the image, pinned with hashes: pyproject.toml'"'"'s [project]\n# dependencies only (no dev, no `local` extra), at the versions the suite runs (`make lock`).' requirements.lock

# pg_dump / pg_restore of each service's database as its own role (<SERVICE>_DATABASE_URL and
# password); BACKUP_DIR defaults to backups/<UTC time>
BACKUP_DIR ?= backups/$(shell date -u +%Y%m%dT%H%M%SZ)
backup: install
	$(PY) -m scripts.backup dump $(BACKUP_DIR)

restore: install
	@test -n "$(FROM)" || { echo "make restore FROM=backups/<time>"; exit 2; }
	$(PY) -m scripts.backup restore $(FROM)

lint: install
	$(VENV)/bin/ruff check shared services scripts tests

clean: infra-down
	rm -rf $(VENV) .infra .cache
