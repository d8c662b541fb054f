# batchgrid's front door. `make demo` and `make test` are all a new user needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO      ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BIN        := $(TARGET_DIR)/debug
RELEASE    := $(TARGET_DIR)/release
DEMO_DIR   := build/demo
DEMO_ROWS  ?= 1000000
DEMO_SEED  ?= 42
WORKERS    ?= 2
ENV        ?=

.PHONY: help setup build tools emulator demo test screenshots lint bench render validate cost diff deploy outputs drift rollout park teardown image smoke clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## check the toolchain (the Rust build needs nothing else)
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }
	@echo "using $$($(CARGO) --version), target dir $(TARGET_DIR)"

build: setup ## build every binary (one debug profile, shared with the tests)
	@echo "building batchgrid and the claims example..."
	$(CARGO) build --workspace --bins

demo: build $(if $(filter local,$(ENV)),emulator,) ## the claims job: 1,000,000 claims on 2 local workers; ENV=local runs it on the local stack
ifeq ($(ENV),local)
	BIN=$(BIN) MOTO_PORT=$(MOTO_PORT) WORKERS=$(WORKERS) bash scripts/demo-local.sh
else
	@mkdir -p $(DEMO_DIR)
	@if [ ! -s $(DEMO_DIR)/claims.csv ] || [ "$$(cat $(DEMO_DIR)/claims.params 2>/dev/null)" != "$(DEMO_ROWS) $(DEMO_SEED)" ]; then \
	  echo "generating $(DEMO_ROWS) synthetic claims (seed $(DEMO_SEED))..."; \
	  $(BIN)/batchgrid-claims generate --rows $(DEMO_ROWS) --seed $(DEMO_SEED) --out $(DEMO_DIR)/claims.csv && \
	  echo "$(DEMO_ROWS) $(DEMO_SEED)" > $(DEMO_DIR)/claims.params; \
	fi
	@rm -rf $(DEMO_DIR)/results
	@echo "running the claims job on $(WORKERS) workers..."
	PATH="$(BIN):$$PATH" $(BIN)/batchgrid run examples/claims/job.yaml --workers $(WORKERS) \
	  --input $(DEMO_DIR)/claims.csv --output $(DEMO_DIR)/results
	@echo; echo "head of $(DEMO_DIR)/results/totals.csv:"; head -n 6 $(DEMO_DIR)/results/totals.csv; echo "..."; tail -n 1 $(DEMO_DIR)/results/totals.csv
	@echo; cat $(DEMO_DIR)/results/summary.txt
endif

# checkov, the CloudFormation scanner, lives in a virtual environment of its own (its many
# pinned dependencies would fight cfn-lint's and moto's), outside the repository so worktrees
# share it. The version is pinned here and in batchgrid-provision/src/render.rs (CHECKOV_VERSION).
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := $(HOME)/.cache/batchgrid/checkov-venv
CHECKOV         := $(CHECKOV_VENV)/bin/checkov

tools: ## install the test tools that do not come with cargo (cfn-lint, moto, prometheus-client from PyPI; checkov pinned in its own venv; systemd, shellcheck, nftables, openssl, chromium from apt)
	@command -v cfn-lint >/dev/null || { echo "installing cfn-lint (pip)..."; python3 -m pip install --quiet 'cfn-lint>=1.20'; }
	@command -v moto_server >/dev/null || { echo "installing moto[server], the local AWS emulator (pip)..."; python3 -m pip install --quiet 'moto[server]>=5'; }
	@python3 -c 'import prometheus_client' 2>/dev/null || { echo "installing prometheus-client, whose parser checks /metrics (pip)..."; python3 -m pip install --quiet 'prometheus-client==0.21.1'; }
	@command -v pyenv >/dev/null && pyenv rehash || true
	@# The image's user and units are checked with systemd's own tools, its scripts with shellcheck.
	@{ command -v systemd-analyze && command -v systemd-sysusers; } >/dev/null || { echo "installing systemd (apt: systemd-analyze, systemd-sysusers)..."; (apt-get update -qq && apt-get install -y -qq systemd) >/dev/null; }
	@command -v shellcheck >/dev/null || { echo "installing shellcheck (apt)..."; (apt-get update -qq && apt-get install -y -qq shellcheck) >/dev/null; }
	@# The fault tests start, stop and restart throwaway PostgreSQL clusters of their own.
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || { echo "installing postgresql (apt: initdb and pg_ctl for the tests' throwaway clusters)..."; (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null; }
	@# The database TLS tests make their certificate authorities with openssl, which also checks the image's RDS bundle.
	@command -v openssl >/dev/null || { echo "installing openssl (apt: test certificates, the image's bundle check)..."; (apt-get update -qq && apt-get install -y -qq openssl) >/dev/null; }
	@# The dashboard's browser test drives headless Chromium, the Debian package.
	@[ -x /usr/bin/chromium ] || { echo "installing chromium (apt: the dashboard's browser test)..."; (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null; }
	@# The image's firewall rule (no instance metadata for tasks) is checked with nft itself.
	@command -v nft >/dev/null || { echo "installing nftables (apt: nft, to check the image's firewall rule)..."; (apt-get update -qq && apt-get install -y -qq nftables) >/dev/null; }
	@[ "$$($(CHECKOV) --version 2>/dev/null)" = "$(CHECKOV_VERSION)" ] || { \
	  echo "installing checkov $(CHECKOV_VERSION) (pip, in its own virtual environment $(CHECKOV_VENV))..."; \
	  python3 -m venv $(CHECKOV_VENV) && $(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'; }
	@echo "using $$(cfn-lint --version), checkov $$($(CHECKOV) --version), moto $$(python3 -c 'import moto; print(moto.__version__)'), $$(systemd-analyze --version | head -n 1), shellcheck $$(shellcheck --version | sed -n 's/^version: //p')"

# cargo test builds every binary the end-to-end tests run, with the same features as the tests
# (a separate `cargo build` would compile much of the tree twice).
test: setup tools ## run every test (unit, conformance, end to end, cfn-lint and checkov on every template)
	@mkdir -p build
	@echo "building and running every test..."
	@set -o pipefail; $(CARGO) test --workspace 2>&1 | tee build/test.log; status=$$?; \
	  awk '/^test result:/ { p += $$4; f += $$6 } END { printf "all tests: %d passed, %d failed\n", p, f }' build/test.log; \
	  exit $$status

lint: ## formatting and clippy, as CI checks them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

screenshots: tools ## the dashboard's pictures in docs/, taken by its browser test
	BATCHGRID_SCREENSHOTS=$(CURDIR)/docs $(CARGO) test --test e2e dashboard::

bench: tools ## measure against baselines run in the same command (see README)
	@command -v hyperfine >/dev/null || { echo "installing hyperfine (apt)..."; (apt-get update -qq && apt-get install -y -qq hyperfine) >/dev/null; }
	$(CARGO) build --release --workspace --bins --benches
	TARGET_DIR=$(TARGET_DIR) bash scripts/bench.sh

render: build ## render build/$(ENV)/template.yaml from environments/$(ENV).yaml
	@[ -n "$(ENV)" ] || { echo "usage: make render ENV=name"; exit 2; }
	$(BIN)/batchgrid render $(ENV)

validate: render tools ## check the environment, render it, and cfn-lint the result
	cfn-lint build/$(ENV)/template.yaml && echo "environment $(ENV): valid; template passes cfn-lint"

cost: build ## what ENV costs at list prices, from its rendered template: idle, parked, per worker-hour
	@[ -n "$(ENV)" ] || { echo "usage: make cost ENV=name"; exit 2; }
	$(BIN)/batchgrid cost $(ENV) $(ARGS)

# ENV=local talks to moto on $(MOTO_PORT), started here when nothing listens there.
MOTO_PORT ?= 5055
LOCAL_AWS = $(if $(filter local,$(ENV)),AWS_ENDPOINT_URL=http://127.0.0.1:$(MOTO_PORT) AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true,)

emulator: tools ## start the local AWS emulator (moto) on MOTO_PORT unless it is running
	@if (exec 3<>/dev/tcp/127.0.0.1/$(MOTO_PORT)) 2>/dev/null; then echo "emulator already on port $(MOTO_PORT)"; else \
	  echo "starting moto on 127.0.0.1:$(MOTO_PORT) (log: build/moto.log)"; mkdir -p build; \
	  nohup moto_server -H 127.0.0.1 -p $(MOTO_PORT) > build/moto.log 2>&1 & \
	  for i in $$(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$(MOTO_PORT)) 2>/dev/null && break; sleep 0.2; done; fi

diff deploy outputs drift rollout park teardown: build $(if $(filter local,$(ENV)),emulator,) ## change set preview, deploy (resumes a parked grid), outputs, drift, instance refresh, park between peaks, teardown (ENV=...)
	@[ -n "$(ENV)" ] || { echo "usage: make $@ ENV=name"; exit 2; }
	$(LOCAL_AWS) $(BIN)/batchgrid $@ $(ENV) $(ARGS)

# After a deploy: a tiny job through the manager, checked, with the time to the first task's
# start (scaling from zero included). On AWS the CLI reaches the manager at BATCHGRID_MANAGER_URL
# (an SSM port forward, see the README); ENV=local runs a manager and a worker as processes in
# place of the emulator's instances.
smoke: build $(if $(filter local,$(ENV)),emulator,) ## after a deploy: run a tiny job through the manager and check it (ENV=...)
	@[ -n "$(ENV)" ] || { echo "usage: make smoke ENV=name"; exit 2; }
ifeq ($(ENV),local)
	$(LOCAL_AWS) BIN=$(BIN) bash scripts/smoke-local.sh
else
	$(BIN)/batchgrid smoke $(ENV) $(ARGS)
endif

# The grid's machine image: the release binary for the grid's architecture (grid.instance_types),
# natively or with cargo-zigbuild from another architecture, uploaded with its units and default
# configuration, then built into an AMI by EC2 Image Builder in the stack NAME-image. The emulator
# has no Image Builder: ENV=local renders the stack, uploads this machine's binary to the emulator
# and runs cfn-lint on the template, and builds no image. The revision is read once, so the binary
# and the image's tags agree even when HEAD moves during the build.
image: build $(if $(filter local,$(ENV)),emulator,) ## build the grid's machine image (AMI id in build/$(ENV)/image-outputs.json)
	@[ -n "$(ENV)" ] || { echo "usage: make image ENV=name"; exit 2; }
	@set -euo pipefail; \
	read -r arch target < <($(BIN)/batchgrid image $(ENV) --print-architecture); \
	export BATCHGRID_GIT_REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown); \
	host=$$(uname -m); [ "$$host" = aarch64 ] && host=arm64; \
	if [ "$$arch" = "$$host" ] || [ "$(ENV)" = local ]; then \
	  [ "$$arch" = "$$host" ] || echo "ENV=local builds no image: uploading this machine's $$host binary (the grid is $$arch)"; \
	  echo "building the release binary ($$host)..."; \
	  $(CARGO) build --release --bin batchgrid; binary=$(RELEASE)/batchgrid; \
	else \
	  command -v cargo-zigbuild >/dev/null || { \
	    echo "the $(ENV) grid is $$arch but this machine is $$host: cross-building needs cargo-zigbuild and the target:"; \
	    echo "  python3 -m pip install ziglang && cargo install cargo-zigbuild && rustup target add $$target"; exit 2; }; \
	  echo "building the release binary for $$arch ($$target, cargo zigbuild)..."; \
	  $(CARGO) zigbuild --release --bin batchgrid --target $$target; binary=$(TARGET_DIR)/$$target/release/batchgrid; \
	fi; \
	$(LOCAL_AWS) $(BIN)/batchgrid image $(ENV) --binary "$$binary" --revision "$$BATCHGRID_GIT_REVISION" $(if $(filter local,$(ENV)),--upload-only,) $(ARGS)
ifeq ($(ENV),local)
	cfn-lint build/local/image.yaml && echo "build/local/image.yaml passes cfn-lint"
endif

clean: ## remove build outputs and local state
	rm -rf build .batchgrid
	$(CARGO) clean
