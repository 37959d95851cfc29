# lameduck: common tasks. `make` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

OVERLAY ?= fixed
VERSION ?= $(shell date +%s)
URL ?= http://127.0.0.1:8080/
RATE ?= 50
DURATION ?= 30s
OVERLAYS := plain readiness graceful-shutdown fixed
KUSTOMIZE ?= $(shell command -v kubectl >/dev/null && echo "kubectl kustomize" || echo "kustomize build")

.PHONY: help demo test test-system e2e e2e-up e2e-down lint load deploy show bench profile render chart soak

chart: ## render the Helm chart (helm on PATH; LAMEDUCK_BLESS=1 on the chart tests rewrites the goldens)
	helm template lameduck charts/lameduck --namespace lameduck-system --kube-version 1.34.0

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

demo: ## the main job: a local rolling-upgrade comparison (README set-up command 1)
	cargo run --release -- lab

test: ## the tests, with nothing but cargo (README set-up command 2)
	cargo test --workspace

test-system: ## the system suite (needs kubectl/kustomize, nginx, prometheus...; .ci/run installs them)
	LAMEDUCK_SYSTEM_TESTS=1 cargo test --workspace -- --ignored --skip e2e::

e2e: ## real rollouts on a single-node cluster built from source (root; e2e/up, the suite, e2e/down)
	LAMEDUCK_E2E=1 cargo test --test integration e2e:: -- --ignored --nocapture

e2e-up: ## bring the e2e node up (kubeconfig: e2e/.state/kubeconfig)
	e2e/up

e2e-down: ## stop the e2e node and remove everything it made
	e2e/down

SOAK_RUNS ?= 100
soak: ## SOAK_RUNS (100) lab rollouts with the sidecar in a row, about 10 s each; fails unless every one lost nothing
	cargo build --release
	@mkdir -p target/soak; lost=0; requests=0; \
	for i in $$(seq 1 $(SOAK_RUNS)); do \
	  ./target/release/lameduck lab --scenario sidecar --json target/soak/run-$$i.json > target/soak/run-$$i.log 2>&1 \
	    || { echo "run $$i: the lab failed, see target/soak/run-$$i.log"; exit 1; }; \
	  failed=$$(grep -o '"failed": [0-9]*' target/soak/run-$$i.json | grep -o '[0-9]*$$'); \
	  sent=$$(grep -o '"requests": [0-9]*' target/soak/run-$$i.json | grep -o '[0-9]*$$'); \
	  lost=$$((lost + failed)); requests=$$((requests + sent)); \
	  echo "run $$i: $$sent requests, $$failed lost"; \
	done; \
	echo "$(SOAK_RUNS) rollouts: $$requests requests, $$lost lost"; test $$lost -eq 0

lint: ## formatting and clippy, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

load: ## constant-rate POST load against URL (RATE per second for DURATION), ?wait= 0, 5 and 10 s
	cargo run --release -- load --url '$(URL)?wait=0' --url '$(URL)?wait=5' --url '$(URL)?wait=10' --rate $(RATE) --duration $(DURATION)

deploy: ## bump VERSION in the pod template and apply OVERLAY (plain|readiness|graceful-shutdown|fixed) with kubectl
	@mkdir -p k8s/.deploy
	@printf '%s\n' \
	  'apiVersion: kustomize.config.k8s.io/v1beta1' 'kind: Kustomization' \
	  'resources:' '  - ../overlays/$(OVERLAY)' \
	  'patches:' '  - patch: |-' \
	  '      apiVersion: apps/v1' '      kind: Deployment' '      metadata: {name: demo-app}' \
	  '      spec: {template: {spec: {containers: [{name: demo-app, env: [{name: VERSION, value: "$(VERSION)"}]}]}}}' \
	  > k8s/.deploy/kustomization.yaml
	kubectl apply -k k8s/.deploy

show: ## print the rendered OVERLAY
	$(KUSTOMIZE) k8s/overlays/$(OVERLAY)

render: ## re-render k8s/rendered/*.yaml from the overlays (the lab reads these) and the PrometheusRule from rules.yml (CI checks both are fresh)
	@for o in $(OVERLAYS); do $(KUSTOMIZE) k8s/overlays/$$o > k8s/rendered/$$o.yaml || exit 1; echo "k8s/rendered/$$o.yaml"; done
	@{ printf '%s\n' '# Generated from rules.yml by `make render`: edit rules.yml, not this file.' \
	  'apiVersion: monitoring.coreos.com/v1' 'kind: PrometheusRule' 'metadata:' '  name: lameduck' \
	  '  labels:' '    app.kubernetes.io/name: lameduck' 'spec:'; \
	  grep -v '^#' k8s/monitoring/rules.yml | sed 's/^\(.\)/  \1/'; } > k8s/monitoring/prometheusrule.yaml
	@echo k8s/monitoring/prometheusrule.yaml

bench: ## benchmarks, side by side in one run (see benches/README.md)
	benches/proxy-overhead/run.sh
	benches/load-peers/run.sh
	benches/grpc-load/run.sh
	benches/webhook/run.sh

profile: ## where the sidecar's time and memory go: perf, heaptrack, RSS per idle connection, instructions per request (see benches/README.md)
	benches/profile/run.sh
	benches/instructions/run.sh
