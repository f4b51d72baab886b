// Package deploy holds jobworker's deployment files, not Go code: the
// container image (Dockerfile), the local container stack (compose.yaml),
// Google Cloud Run services and the migration job (cloudrun/), AWS Lambda
// through the Lambda Web Adapter (lambda/) and Kubernetes manifests
// (kubernetes/), a Grafana dashboard and Prometheus alert rules
// (monitoring/). README.md says how to point each at Upstash Redis, QStash,
// Stripe and PostgreSQL, how each runs the database migration (`api
// -migrate`), and which client-address mode the API's rate limiter needs.
//
// The package's tests check what can be checked without a container engine:
// every manifest parses; the Dockerfiles follow the image rules (static
// CGO_ENABLED=0 build, distroless non-root runtime, no shell); the static
// binaries build and have no dynamic loader or shared libraries; every
// environment variable a manifest sets is one the code reads (a scan of the
// packages the binaries link, checked against the loaders themselves), and
// each manifest's environment passes the binaries' own configuration loader;
// credentials come from the platform's secret store; the migration runs before
// the binaries start; the compose file names only services, stages and health
// checks that exist; the alert rules and the Grafana dashboard's queries in
// monitoring/ pass promtool (and the rules' unit tests) and name only
// metrics the code declares.
// JOBWORKER_BENCH_COLDSTART=1 adds the cold-start measurement
// (docs/benchmarks.md, "deploy: cold start").
package deploy
