# porthole: see README.md. `make test` is what CI runs.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/porthole-dev/porthole/cli.Version=$(VERSION)
GOBUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
MASTER_LDFLAGS := -s -w -X github.com/porthole-dev/porthole/master/mastercli.Version=$(VERSION)
ADDR ?= 127.0.0.1:4444
MASTER_ADDR ?= 127.0.0.1:8080

.PHONY: build cross test e2e bench run run-agent clean lint stress faults

# The binaries; porthole-master embeds the dashboard, built first when npm
# is installed (without npm, porthole-master serves a page saying how to
# build it).
build: dashboard
	$(GOBUILD) -o bin/porthole ./cmd/porthole
	CGO_ENABLED=0 go build -trimpath -ldflags "$(MASTER_LDFLAGS)" -o bin/porthole-master ./cmd/porthole-master

cross: build
	GOARCH=arm64 $(GOBUILD) -o bin/porthole-linux-arm64 ./cmd/porthole

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

# The fault-injection suite (faults/, build tag faults; docs/reliability.md):
# the release binaries of `make build` in two network namespaces, with
# partitions, loss, delay, cut connections and killed processes. Needs
# root; installs iproute2 and iptables when missing (faults/prepare.sh).
faults: build
	./faults/prepare.sh
	PORTHOLE_BIN=$(CURDIR)/bin go test -race -tags faults -count=1 -timeout 15m -v ./faults/

bench: build
	go test -run '^$$' -bench . -benchtime 1x -count 1 ./bench/ | tee bench.out

# porthole-master with two demo machines (scripts/run-master.sh).
run: build
	./scripts/run-master.sh $(MASTER_ADDR)

# A lone agent with the browser terminal (scripts/run-agent.sh).
run-agent: build
	./scripts/run-agent.sh $(ADDR)

clean:
	rm -rf bin bench.out
	find master/dashboard/dist -mindepth 1 ! -name .keep -delete
