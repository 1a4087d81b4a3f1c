# The two commands of the README: `make run` (the engine and its local stack) and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint lock bench demo-exhaust debian-packages

# Debian packages the tests run for real: nginx's stream module is the TLS proxy in front of
# Temporal (tests/test_temporal_tls.py); Prometheus (promtool), Alertmanager (amtool),
# postgres-exporter and blackbox-exporter check and run infra/monitoring/
# (tests/test_monitoring_*.py); chromium is the browser playwright drives to read decoded
# payloads in the Temporal UI (tests/test_encrypted_history.py); docker-compose resolves the
# Compose install without a Docker engine (tests/test_deploy_compose.py). Installed as root,
# only when one of their binaries is missing.
DEB_PACKAGES := nginx-light libnginx-mod-stream prometheus prometheus-alertmanager \
	prometheus-postgres-exporter prometheus-blackbox-exporter chromium docker-compose
DEB_BINARIES := /usr/sbin/nginx /usr/lib/nginx/modules/ngx_stream_module.so \
	/usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/amtool \
	/usr/bin/prometheus-postgres-exporter /usr/bin/prometheus-blackbox-exporter /usr/bin/chromium \
	/usr/bin/docker-compose

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m infra.stack

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The image's lock (Dockerfile): pyproject's runtime dependencies and the build backend, with
# hashes, for the image's platform. Keeps the current pins; `make lock UPGRADE=--upgrade` moves
# them. tests/test_deploy_image.py fails while pyproject asks for something the lock lacks.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml infra/image/build-backend.in $(UPGRADE) \
		--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command 'make lock' --quiet -o infra/image/requirements.lock

# The packages' own services are kept from starting (policy-rc.d, only while installing and
# only if there was none): the tests start their own on free ports with their own data dirs.
debian-packages:
	@missing=""; for f in $(DEB_BINARIES); do [ -e "$$f" ] || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "make test needs $(DEB_PACKAGES) (missing:$$missing): run it as root or apt-get install them" >&2; \
			exit 1; \
		fi; \
		policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
			policy=/usr/sbin/policy-rc.d; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			$(DEB_PACKAGES); status=$$?; \
		[ -z "$$policy" ] || rm -f "$$policy"; \
		exit $$status; \
	fi

test: lint debian-packages
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(PY) -m benchmarks.overhead

# The README's first demo: the demo app leaks connections until orders-db's pool is exhausted.
demo-exhaust:
	curl -fsS -X POST 'http://127.0.0.1:8088/debug/leak?connections=150'
	@echo
