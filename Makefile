# Cyclone: the two commands are `make run` and `make test`.
GO            ?= go
BIN           := bin/cyclone
GOLANGCI_LINT := $(shell $(GO) env GOPATH)/bin/golangci-lint
GOLANGCI_VER  := v2.15.0
TEST_TIMEOUT  ?= 45m
# Pure Go everywhere (the embedded SQLite is modernc.org/sqlite): static binaries,
# and one build cache shared by the tests and the image they build.
export CGO_ENABLED ?= 0

.PHONY: run build test test-deps lint bench clean

## run: build and start everything in one process (embedded Temporal + Web UI, embedded store, API, worker)
run: build
	./$(BIN) dev

## build: compile the cyclone binary into bin/
build:
	$(GO) build -o $(BIN) ./cmd/cyclone

## test-deps: install what the tests need (git, subversion, docker-registry, busybox-static, etcd, the temporal CLI, a kube-apiserver built from the Go module proxy) and check the Docker engine
test-deps:
	./scripts/test-deps.sh

## test: install test dependencies, vet, and run every test (no test may skip)
test: test-deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

$(GOLANGCI_LINT):
	GOTOOLCHAIN=local $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VER)

## lint: gofmt, go vet and golangci-lint
lint: $(GOLANGCI_LINT)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

## bench: run the benchmarks (figures go to bench/RESULTS.md)
bench: test-deps
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/
	$(GO) test -run '^$$' -bench . -benchtime 20x -timeout 30m ./bench/logs/
	$(GO) test -run '^$$' -bench BenchmarkOwnCardWrite -benchtime 200x ./internal/store/

clean:
	rm -rf bin
