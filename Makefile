# porthole: see README.md. `make test` is what CI runs.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/porthole-dev/porthole/cli.Version=$(VERSION)
GOBUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
ADDR ?= 127.0.0.1:4444

.PHONY: build cross test e2e bench run clean

build:
	$(GOBUILD) -o bin/porthole ./cmd/porthole

cross: build
	GOARCH=arm64 $(GOBUILD) -o bin/porthole-linux-arm64 ./cmd/porthole

# go vet, the race-enabled unit and end-to-end tests (the end-to-end tests
# build bin/porthole and drive it through real PTYs, WebSockets and tmux).
test: build
	go vet ./...
	go test -race -count=1 ./...

# The browser terminal (web/terminal/dist, served by `porthole agent -web`).
# Needs node and npm; nothing else depends on it (webtest builds it itself).
.PHONY: web
web:
	cd web/terminal && if [ -f package-lock.json ]; then npm ci; else npm install; fi && npm run build

bench: build
	go test -run '^$$' -bench . -benchtime 1x -count 1 ./bench/ | tee bench.out

run: build
	./scripts/run-agent.sh $(ADDR)

clean:
	rm -rf bin bench.out
