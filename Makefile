# porthole: see README.md. `make test` is what CI runs.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/porthole-dev/porthole/cli.Version=$(VERSION)
GOBUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
MASTER_LDFLAGS := -s -w -X github.com/porthole-dev/porthole/master/mastercli.Version=$(VERSION)
ADDR ?= 127.0.0.1:4444
MASTER_ADDR ?= 127.0.0.1:8080

.PHONY: build cross test e2e bench run run-agent clean lint stress images e2e-engine fuzz faults

# The binaries; porthole-master embeds the dashboard, built first when npm
# is installed (without npm, porthole-master serves a page saying how to
# build it).
build: dashboard
	$(GOBUILD) -o bin/porthole ./cmd/porthole
	CGO_ENABLED=0 go build -trimpath -ldflags "$(MASTER_LDFLAGS)" -o bin/porthole-master ./cmd/porthole-master

cross: build
	GOARCH=arm64 $(GOBUILD) -o bin/porthole-linux-arm64 ./cmd/porthole

# The copier and master images, FROM scratch with the binaries above
# (runtime-copier/Containerfile, deploy/master/Containerfile), built with
# podman or buildah, offline: the build context is bin/.
IMAGE_PREFIX ?= ghcr.io/porthole-dev/
IMAGE_TAG ?= $(VERSION)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_BUILDER ?= $(shell command -v podman 2>/dev/null || command -v buildah 2>/dev/null)
images: build
	@test -n "$(IMAGE_BUILDER)" || { echo "make images: install podman or buildah"; exit 1; }
	$(IMAGE_BUILDER) build --layers=false --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-f runtime-copier/Containerfile -t $(IMAGE_PREFIX)porthole-copier:$(IMAGE_TAG) bin/
	$(IMAGE_BUILDER) build --layers=false --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		-f deploy/master/Containerfile -t $(IMAGE_PREFIX)porthole-master:$(IMAGE_TAG) bin/

# The shipped deploy/kubernetes manifests played in a real engine (podman
# kube play), the arm64 binary under qemu-user; as root. Installs what it
# needs from Debian and applies only the workarounds this machine needs
# (scripts/engine/engine.sh); docs/injection.md says what it checks.
# The test removes what it made; `engine.sh down` again covers a test
# binary killed by its timeout.
e2e-engine: cross
	./scripts/engine/engine.sh install
	go test -tags engine -count=1 -timeout 8m -v ./deploy/e2e/; rc=$$?; ./scripts/engine/engine.sh down; exit $$rc

# go vet, the race-enabled unit and end-to-end tests (the end-to-end tests
# run porthole and porthole-master as the test binary re-executed, so under
# the race detector too, and drive them through real PTYs, WebSockets and
# tmux).
test: build
	go vet ./...
	go test -race -count=1 ./...

# The browser terminal (web/terminal/dist, served by `porthole agent -web`)
# and porthole-master's dashboard (web/dashboard, built into
# master/dashboard/dist and embedded in porthole-master). Needs node and npm
# (webtest builds both itself).
.PHONY: web
web:
	cd web/terminal && if [ -f package-lock.json ]; then npm ci; else npm install; fi && npm run build
	cd web/dashboard && npm ci && npm run build

# The dashboard, when its sources or packages changed, if npm is installed.
NPM := $(shell command -v npm 2>/dev/null)
DASHBOARD := master/dashboard/dist/index.html
DASHBOARD_SRC := $(wildcard web/dashboard/src/* web/shared/*) web/dashboard/index.html web/dashboard/build.mjs web/dashboard/package.json
.PHONY: dashboard
ifeq ($(NPM),)
dashboard:
	@echo "npm not found: porthole-master is built without its dashboard (install node and npm, then make build)"
else
dashboard: $(DASHBOARD)
endif

$(DASHBOARD): $(DASHBOARD_SRC) web/dashboard/node_modules/.package-lock.json
	cd web/dashboard && npm run build

web/dashboard/node_modules/.package-lock.json: web/dashboard/package-lock.json web/dashboard/package.json
	cd web/dashboard && npm ci

# go vet, staticcheck and govulncheck at pinned versions, fetched through
# the Go module proxy (scripts/lint.sh).
lint:
	./scripts/lint.sh

# The timing-sensitive packages (agent, bootstrapper, cli, client, entrypoint,
# internal, master) with -race -count=$(STRESS_COUNT) while busy
# loops keep every core busy (scripts/stress.sh); .ci/run uses a count of 3.
STRESS_COUNT ?= 10
stress:
	./scripts/stress.sh $(STRESS_COUNT)

# Every fuzz target (func FuzzXxx, docs/security.md) for FUZZTIME each
# (scripts/fuzz.sh); make test runs their corpora (testdata/fuzz) only.
FUZZTIME ?= 30s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# The fault-injection suite (faults/, build tag faults; docs/reliability.md):
# the release binaries of `make build` in two network namespaces, with
# partitions, loss, delay, cut connections and killed processes. Needs
# root; installs iproute2 and iptables when missing (faults/prepare.sh).
faults: build
	./faults/prepare.sh
	PORTHOLE_BIN=$(CURDIR)/bin go test -race -tags faults -count=1 -timeout 15m -v ./faults/

# The end-to-end benchmarks (bench/, docs/performance.md), about 6 minutes;
# -v so that no benchmark's log is cut at 10 lines. The benchmarks build
# cmd/porthole and cmd/porthole-master themselves, once per run, from the
# tree as it is.
bench: build
	go test -v -run '^$$' -bench . -benchtime 1x -count 1 -timeout 20m ./bench/ | tee bench.out

# porthole-master with two demo machines (scripts/run-master.sh).
run: build
	./scripts/run-master.sh $(MASTER_ADDR)

# A lone agent with the browser terminal (scripts/run-agent.sh).
run-agent: build
	./scripts/run-agent.sh $(ADDR)

clean:
	rm -rf bin bench.out
	find master/dashboard/dist -mindepth 1 ! -name .keep -delete
