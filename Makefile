# icey-server — build, test and benchmark entry points.
# `make test` installs what the tests need when missing (Debian chromium and
# ffmpeg) and runs every test (unit, integration, real-browser) inside a
# loopback-only network namespace, so no test can reach another host.

GO        ?= go
PKGS      ?= ./...
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0)
LDFLAGS   := -s -w -X main.version=$(VERSION)
TESTFLAGS ?= -race -count=1 -timeout 12m

FUZZTIME  ?= 3s
# FUZZ=0 leaves out the short fuzzing pass of make test (CI's second,
# non-root run: the root run already fuzzed the same tree).
FUZZ      ?= 1

.PHONY: all build run test test-short test-faults soak soak-short fuzz deps lint vet fmt bench ops-bench docker clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/icey-server ./cmd/icey-server

run:
	$(GO) run ./cmd/icey-server

deps:
	@scripts/test-deps.sh

# Modules and the build are fetched outside the namespace (it has no
# network); the tests then run with the module proxy switched off.
test: deps
	$(GO) mod download
	$(GO) build ./...
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@scripts/netns.sh env GOPROXY=off GOFLAGS=-mod=readonly $(GO) test $(TESTFLAGS) $(PKGS)
	cd deploy/k8s/validate && $(GO) mod download && ../../../scripts/netns.sh env GOPROXY=off GOFLAGS=-mod=readonly $(GO) test -count=1 ./...
	@if [ "$(FUZZ)" != 0 ]; then scripts/netns.sh env GOPROXY=off GOFLAGS=-mod=readonly scripts/fuzz.sh $(FUZZTIME); \
	else echo "fuzz targets not run (FUZZ=0)"; fi

# The standing fault suite (docs/faults.md): every TestFault* test, the
# long ones behind the `faults` build tag included, without the race
# detector (the load faults measure rates; make test runs the short ones
# with it). As root, or as a normal user where user namespaces are allowed.
test-faults: deps
	$(GO) mod download
	$(GO) vet -tags faults ./...
	@scripts/netns.sh env GOPROXY=off GOFLAGS=-mod=readonly $(GO) test -tags faults -count=1 -timeout 30m -run '^TestFault' ./...

# The soak (docs/faults.md): one server, paths of every kind, viewers
# joining and leaving, a camera dropping, publishers handing over,
# recording; samples every 10 s to soak.csv and soak.png in SOAK_OUT.
# make soak runs an hour; make soak-short (in CI) five minutes.
SOAK_OUT ?= bench-results/soak
soak: deps
	$(GO) mod download
	@mkdir -p $(SOAK_OUT)
	@scripts/netns.sh env GOPROXY=off GOFLAGS=-mod=readonly SOAK_DURATION=$(or $(SOAK_DURATION),1h) SOAK_OUT=$(abspath $(SOAK_OUT)) \
		$(GO) test -tags soak -count=1 -timeout $(or $(SOAK_TIMEOUT),90m) -v -run '^TestSoak$$' ./cmd/icey-server/

soak-short:
	@$(MAKE) --no-print-directory soak SOAK_DURATION=5m SOAK_TIMEOUT=20m SOAK_OUT=$(or $(SOAK_OUT_SHORT),bench-results/soak-short)

# Every fuzz target for longer (FUZZTIME=5m make fuzz for a deeper run).
fuzz:
	$(GO) mod download
	@scripts/netns.sh env GOPROXY=off GOFLAGS=-mod=readonly scripts/fuzz.sh $(if $(filter 3s,$(FUZZTIME)),60s,$(FUZZTIME))

# Quick loop while developing: no browser tests, no race detector (still in
# the loopback-only namespace, as root or as a normal user).
test-short:
	@scripts/netns.sh $(GO) test -short -count=1 $(PKGS)

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

ops-bench:
	@scripts/netns.sh scripts/ops-bench.sh

bench: deps build
	@scripts/netns.sh scripts/bench.sh

IMAGE     ?= icey-server
docker:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

clean:
	rm -rf bin
