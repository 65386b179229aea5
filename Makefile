# bgd: blue-green deployments from the load-balancer host.
GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
SHELL    := bash

.PHONY: build demo test lint fuzz bench images compose-images compose-test clean verify-units systemd-test

## build: bin/bgd and the seed-compatible link bin/blue_green_deploy
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/bgd ./cmd/bgd
	ln -sf bgd bin/blue_green_deploy

## demo: the main job: start the active colour (blue when fresh), deploy the other, request through the proxy, rollback
demo: build
	./scripts/demo.sh

## test: every test; integration tests need nginx and haproxy (CI=1 turns a skip into a failure)
test:
	./scripts/test.sh

## lint: go vet and staticcheck (pinned, run with go run)
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: zero-downtime and speed figures for builtin, nginx and HAProxy (BENCH_SHORT=1: a quick smoke run)
bench: build
	$(GO) run ./integration/bench $(if $(BENCH_SHORT),-short) -bgd bin/bgd -out bench-results

## fuzz: each fuzz target for FUZZTIME (default 60000x executions; a duration such as 30s works too)
FUZZTIME ?= 60000x
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

## images: the Debian base image bgd/debian:bookworm from Debian packages (skipped when present), then the test images FROM it
images:
	./images/base.sh
	docker build -q -t bgd/systemd-host images/systemd-host
	$(MAKE) compose-images

## compose-images: bgd built here (CGO_ENABLED=0) into the build context images/bin, then docker-compose.yml's images and the fleet's etcd
compose-images:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o images/bin/bgd ./cmd/bgd
	docker-compose build --parallel -q
	docker-compose -f docker-compose.fleet.yml build -q etcd1

## compose-test: the docker-compose topology under load and faults, per driver (after make images, which makes the base; CI=1: no skip)
compose-test: compose-images
	TEST_TAGS=compose TEST_TIMEOUT=10m ./scripts/test.sh ./integration/compose/

## verify-units: systemd-analyze verify on deploy/systemd, failing on any warning (needs systemd-analyze)
verify-units: build
	BGD=bin/bgd ./scripts/verify-units.sh

## systemd-test: the shipped units and the Ansible role on systemd as PID 1 in a container (after make images; needs docker, ansible)
systemd-test:
	TEST_TAGS=systemd ./scripts/test.sh ./integration/systemd/

clean:
	rm -rf bin images/bin
