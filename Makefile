# The two commands the README promises, plus the checks CI runs.
.PHONY: dev test check fuzz

dev: ## run the whole stack locally (no accounts, no external services)
	go run ./cmd/dev

test: ## the test suite: real redis-server processes, race detector on
	go test -race -count=1 ./...

fuzz: ## a short pass of every fuzz target (go test runs one target per call)
	go test -run='^$$' -fuzz='^FuzzQStashVerify$$' -fuzztime=10s ./webhooks
	go test -run='^$$' -fuzz='^FuzzQStashVerifyRequest$$' -fuzztime=10s ./webhooks
	go test -run='^$$' -fuzz='^FuzzParseQStashSignature$$' -fuzztime=10s ./webhooks
	go test -run='^$$' -fuzz='^FuzzQStashJSON$$' -fuzztime=10s ./webhooks
	go test -run='^$$' -fuzz='^FuzzQStashClaimsRoundTrip$$' -fuzztime=5s ./webhooks
	go test -run='^$$' -fuzz='^FuzzStripeSignatureHeader$$' -fuzztime=10s ./webhooks
	go test -run='^$$' -fuzz='^FuzzParsePublishHeaders$$' -fuzztime=5s ./qstashdev
	go test -run='^$$' -fuzz='^FuzzRetryExpr$$' -fuzztime=5s ./qstashdev
	go test -run='^$$' -fuzz='^FuzzGuard$$' -fuzztime=5s ./qstashdev
	go test -run='^$$' -fuzz='^FuzzJSON$$' -fuzztime=10s ./internal/validtext
	go test -run='^$$' -fuzz='^FuzzEncode$$' -fuzztime=5s ./internal/keyid

check: ## formatting and vet, as CI runs them
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
