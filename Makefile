# The two commands the README promises, plus the checks CI runs.
.PHONY: dev test check fuzz

dev: ## run the whole stack locally (no accounts, no external services)
	go run ./cmd/dev

test: ## the test suite: real redis-server processes, race detector on
	go test -race -count=1 ./...

check: ## formatting and vet, as CI runs them
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
