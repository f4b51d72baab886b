package deploy_test

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, file string) []any {
	t.Helper()
	docs, err := decodeFile(filepath.FromSlash(file))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return docs
}

func TestComposeReferencesExist(t *testing.T) {
	t.Parallel()
	doc := load(t, "compose.yaml")[0]
	services := mapping(doc, "services")
	for _, want := range []string{"redis", "postgres", "qstash-dev", migrateContainer, "worker", "api"} {
		if services[want] == nil {
			t.Errorf("service %s is missing", want)
		}
	}
	volumes := mapping(doc, "volumes")
	// One-shot services are waited for with service_completed_successfully;
	// they exit instead of becoming healthy.
	oneShot := map[string]bool{}
	for _, svc := range services {
		for dep, spec := range mapping(svc, "depends_on") {
			if str(spec, "condition") == "service_completed_successfully" {
				oneShot[dep] = true
			}
		}
	}
	for name, svc := range services {
		deps := mapping(svc, "depends_on")
		for _, d := range list(svc, "depends_on") { // short form
			deps[d.(string)] = nil
		}
		for dep, spec := range deps {
			target, ok := services[dep]
			if !ok {
				t.Errorf("%s depends on %s, which is not a service", name, dep)
				continue
			}
			if str(spec, "condition") == "service_healthy" && get(target, "healthcheck") == nil {
				t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
			}
		}
		for _, v := range list(svc, "volumes") {
			src, _, _ := strings.Cut(v.(string), ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := volumes[src]; !ok {
					t.Errorf("%s mounts volume %s, which is not declared", name, src)
				}
			}
		}
		if oneShot[name] {
			// A restart policy would run it again after it exited 0.
			if str(svc, "restart") != "no" {
				t.Errorf("%s runs once (others wait for it to complete); its restart is %q, want \"no\"", name, str(svc, "restart"))
			}
		} else if get(svc, "healthcheck") == nil {
			t.Errorf("%s has no healthcheck", name)
		}
		build := mapping(svc, "build")
		if build == nil {
			continue
		}
		df := filepath.Join(filepath.FromSlash(str(build, "context")), filepath.FromSlash(str(build, "dockerfile")))
		if _, err := os.Stat(df); err != nil {
			t.Errorf("%s builds from %s: %v", name, df, err)
			continue
		}
		st := parseDockerfile(t, df).stage(str(build, "target"))
		if st == nil {
			t.Errorf("%s builds target %q, which %s does not define", name, str(build, "target"), df)
			continue
		}
		if get(svc, "read_only") != "true" {
			t.Errorf("%s: read_only is not true", name)
		}
		if oneShot[name] {
			continue
		}
		// Distroless has no curl: the health check runs the image's own binary.
		ep := st.entrypoint()
		hc := list(svc, "healthcheck", "test")
		if len(ep) == 0 || len(hc) != 3 || hc[0] != "CMD" || hc[1] != ep[0] || hc[2] != "-healthcheck" {
			t.Errorf("%s healthcheck is %v, want [CMD %v -healthcheck]", name, hc, ep)
		}
	}
}

// TestComposeMigratesFirst: everything that uses the database starts only
// after the one-shot `api -migrate` service completed.
func TestComposeMigratesFirst(t *testing.T) {
	t.Parallel()
	var migrate string
	for _, w := range workloads(t) {
		if strings.HasPrefix(w.where, "compose.yaml ") && w.mode() == "api -migrate" {
			migrate = strings.TrimPrefix(w.where, "compose.yaml services.")
		}
	}
	if migrate == "" {
		t.Fatal("compose.yaml has no service running `/api -migrate`")
	}
	services := mapping(load(t, "compose.yaml")[0], "services")
	for name, svc := range services {
		if name == migrate || !hasEnv(get(svc, "environment"), "DATABASE_URL") {
			continue
		}
		if str(svc, "depends_on", migrate, "condition") != "service_completed_successfully" {
			t.Errorf("%s uses DATABASE_URL but does not wait for %s with condition service_completed_successfully", name, migrate)
		}
	}
}

func hasEnv(env any, name string) bool {
	switch env := env.(type) {
	case map[string]any:
		_, ok := env[name]
		return ok
	case []any:
		for _, e := range env {
			if k, _, _ := strings.Cut(e.(string), "="); k == name {
				return true
			}
		}
	}
	return false
}

// isSecretEnv says whether a variable's value is a credential that must come
// from the platform's secret store rather than a literal in a manifest.
func isSecretEnv(name string) bool {
	return strings.Contains(name, "SECRET") || strings.Contains(name, "TOKEN") ||
		strings.HasSuffix(name, "_KEY") || name == "REDIS_URL" || name == "DATABASE_URL"
}

// byKind indexes Kubernetes documents of a set of files by kind and name.
func byKind(t *testing.T, files ...string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, f := range files {
		for _, d := range load(t, f) {
			k := str(d, "kind")
			if out[k] == nil {
				out[k] = map[string]any{}
			}
			out[k][str(d, "metadata", "name")] = d
		}
	}
	return out
}

func parseDur(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

func envOf(c any) map[string]any {
	out := map[string]any{}
	for _, e := range list(c, "env") {
		out[str(e, "name")] = e
	}
	return out
}

func TestKubernetesWiring(t *testing.T) {
	t.Parallel()
	kust := load(t, "kubernetes/base/kustomization.yaml")[0]
	var files []string
	for _, r := range list(kust, "resources") {
		f := "kubernetes/base/" + r.(string)
		if _, err := os.Stat(f); err != nil {
			t.Errorf("kustomization resource %s: %v", r, err)
			continue
		}
		files = append(files, f)
	}
	objs := byKind(t, files...)
	secret := mapping(load(t, "kubernetes/secret.example.yaml")[0], "stringData")
	for _, want := range []string{"jobworker-api", "jobworker-worker"} {
		if objs["Deployment"][want] == nil {
			t.Errorf("Deployment %s is missing", want)
		}
		for _, kind := range []string{"Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} {
			if objs[kind][want] == nil {
				t.Errorf("%s %s is missing", kind, want)
			}
		}
	}
	if objs["Deployment"]["jobworker-qstash-dev"] != nil {
		t.Error("qstash-dev is in the production manifests; keep it in the dev overlay")
	}
	for name, dep := range objs["Deployment"] {
		spec := get(dep, "spec", "template", "spec")
		labels := mapping(dep, "spec", "template", "metadata", "labels")
		if !subset(mapping(dep, "spec", "selector", "matchLabels"), labels) {
			t.Errorf("%s: selector does not match its pod labels", name)
		}
		if get(spec, "securityContext", "runAsNonRoot") != "true" {
			t.Errorf("%s: runAsNonRoot is not true", name)
		}
		inits := list(spec, "initContainers")
		for _, c := range append(append([]any(nil), inits...), list(spec, "containers")...) {
			sc := get(c, "securityContext")
			if get(sc, "readOnlyRootFilesystem") != "true" || get(sc, "allowPrivilegeEscalation") != "false" ||
				len(list(sc, "capabilities", "drop")) != 1 || str(sc, "capabilities", "drop", 0) != "ALL" {
				t.Errorf("%s: container %s securityContext %v is not locked down", name, str(c, "name"), sc)
			}
			if get(c, "resources", "requests", "memory") == nil || get(c, "resources", "limits", "memory") == nil {
				t.Errorf("%s: container %s: memory request and limit are required", name, str(c, "name"))
			}
			for n, e := range envOf(c) {
				ref := get(e, "valueFrom", "secretKeyRef")
				if ref != nil && (str(ref, "name") != "jobworker" || secret[str(ref, "key")] == nil) {
					t.Errorf("%s: %s refers to secret %s key %s, which secret.example.yaml does not define", name, n, str(ref, "name"), str(ref, "key"))
				}
				if ref == nil && isSecretEnv(n) {
					t.Errorf("%s: %s must come from the Secret (secretKeyRef), not a literal", name, n)
				}
			}
		}
		// The schema must exist before a container that uses the database
		// starts: an init container runs `/api -migrate` (idempotent, under
		// an advisory lock, so every pod may run it).
		migrated := false
		for _, c := range inits {
			migrated = migrated || (str(c, "name") == migrateContainer && str(c, "image") == "jobworker-api" &&
				len(list(c, "args")) == 1 && str(c, "args", 0) == "-migrate" && envOf(c)["DATABASE_URL"] != nil)
		}
		for _, c := range list(spec, "containers") {
			if envOf(c)["DATABASE_URL"] != nil && !migrated {
				t.Errorf("%s: container %s uses DATABASE_URL but no init container %q runs jobworker-api with args [-migrate]", name, str(c, "name"), migrateContainer)
			}
		}
		for _, c := range list(spec, "containers") {
			if str(c, "readinessProbe", "httpGet", "path") != "/readyz" || str(c, "livenessProbe", "httpGet", "path") != "/healthz" {
				t.Errorf("%s: want readiness on /readyz and liveness on /healthz", name)
			}
			env := envOf(c)
			// The kubelet kills at the grace period; drain and in-flight
			// requests must both fit inside it.
			drain := parseDur(t, str(env["SHUTDOWN_DRAIN_DELAY"], "value"))
			timeout := parseDur(t, str(env["SHUTDOWN_TIMEOUT"], "value"))
			grace := parseDur(t, str(spec, "terminationGracePeriodSeconds")+"s")
			if drain == 0 || grace <= drain+timeout {
				t.Errorf("%s: terminationGracePeriodSeconds %v must exceed SHUTDOWN_DRAIN_DELAY %v + SHUTDOWN_TIMEOUT %v (drain > 0)", name, grace, drain, timeout)
			}
		}
	}
	for name, h := range objs["HorizontalPodAutoscaler"] {
		if objs["Deployment"][str(h, "spec", "scaleTargetRef", "name")] == nil {
			t.Errorf("HPA %s targets a missing Deployment", name)
		}
	}
	for _, kind := range []string{"PodDisruptionBudget", "Service"} {
		for name, o := range objs[kind] {
			sel := mapping(o, "spec", "selector", "matchLabels")
			if kind == "Service" {
				sel = mapping(o, "spec", "selector")
			}
			if sel == nil || !subset(sel, mapping(objs["Deployment"][name], "spec", "template", "metadata", "labels")) {
				t.Errorf("%s %s does not select the pods of Deployment %s", kind, name, name)
			}
			if kind == "PodDisruptionBudget" && str(o, "spec", "minAvailable") != "1" {
				t.Errorf("PDB %s: minAvailable is not 1", name)
			}
		}
	}
}

// TestKustomizeLayout checks what `kubectl apply -k` would refuse: a file
// resource outside the kustomization's directory (the default load
// restrictor) and a directory resource that contains the kustomization
// itself (kustomize reports a cycle when a base contains its overlay).
func TestKustomizeLayout(t *testing.T) {
	t.Parallel()
	for _, f := range manifestFiles(t) {
		if filepath.Base(f) != "kustomization.yaml" {
			continue
		}
		dir := filepath.Dir(f)
		for _, r := range list(load(t, filepath.ToSlash(f))[0], "resources") {
			p := filepath.Join(dir, filepath.FromSlash(r.(string)))
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: resource %s: %v", f, r, err)
				continue
			}
			if !fi.IsDir() {
				if rel, err := filepath.Rel(dir, p); err != nil || strings.HasPrefix(rel, "..") {
					t.Errorf("%s: file resource %s is outside the kustomization's directory", f, r)
				}
				continue
			}
			if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
				t.Errorf("%s: directory resource %s has no kustomization.yaml", f, r)
			}
			if rel, err := filepath.Rel(p, dir); err == nil && !strings.HasPrefix(rel, "..") {
				t.Errorf("%s: resource %s contains this kustomization; kustomize refuses the cycle (keep overlays beside their base)", f, r)
			}
		}
	}
}

func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestCloudRunServices(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"cloudrun/api.yaml", "cloudrun/worker.yaml"} {
		doc := load(t, f)[0]
		tmpl := get(doc, "spec", "template")
		if str(tmpl, "metadata", "annotations", "autoscaling.knative.dev/minScale") != "0" {
			t.Errorf("%s: minScale is not 0", f)
		}
		if str(tmpl, "spec", "containerConcurrency") == "" {
			t.Errorf("%s: containerConcurrency is not set", f)
		}
		c := get(tmpl, "spec", "containers", 0)
		if str(c, "startupProbe", "httpGet", "path") != "/readyz" {
			t.Errorf("%s: startup probe is not on /readyz", f)
		}
		for n, e := range envOf(c) {
			if n == "PORT" {
				t.Errorf("%s: Cloud Run sets PORT itself; it may not be in env", f)
			}
			if ref := get(e, "valueFrom", "secretKeyRef"); ref != nil && (str(ref, "name") == "" || str(ref, "key") == "") {
				t.Errorf("%s: %s secretKeyRef needs the secret name and version", f, n)
			}
			if isSecretEnv(n) && get(e, "valueFrom", "secretKeyRef") == nil {
				t.Errorf("%s: %s must come from Secret Manager", f, n)
			}
		}
	}
}

// TestCloudRunMigrateJob: the release step is a Cloud Run job running the
// api image as `/api -migrate` with DATABASE_URL from Secret Manager.
func TestCloudRunMigrateJob(t *testing.T) {
	t.Parallel()
	doc := load(t, "cloudrun/migrate.yaml")[0]
	if str(doc, "kind") != "Job" || !strings.HasPrefix(str(doc, "apiVersion"), "run.googleapis.com/") {
		t.Fatalf("cloudrun/migrate.yaml is a %s %s, want a Cloud Run Job", str(doc, "apiVersion"), str(doc, "kind"))
	}
	task := get(doc, "spec", "template", "spec", "template", "spec")
	cs := list(task, "containers")
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := cs[0]
	if !strings.Contains(str(c, "image"), "/api:") || len(list(c, "args")) != 1 || str(c, "args", 0) != "-migrate" {
		t.Errorf("container runs %s %v, want the api image with args [-migrate]", str(c, "image"), list(c, "args"))
	}
	if get(envOf(c)["DATABASE_URL"], "valueFrom", "secretKeyRef") == nil {
		t.Error("DATABASE_URL must come from Secret Manager")
	}
	if str(task, "maxRetries") == "" || str(task, "timeoutSeconds") == "" {
		t.Error("set maxRetries and timeoutSeconds: a migration that hangs on a lock must end")
	}
}

func TestLambdaTemplate(t *testing.T) {
	t.Parallel()
	doc := load(t, "lambda/template.yaml")[0]
	global := mapping(doc, "Globals", "Function", "Environment", "Variables")
	if global["AWS_LWA_READINESS_CHECK_PATH"] != "/readyz" || global["PORT"] != global["AWS_LWA_PORT"] {
		t.Errorf("adapter settings: %v", global)
	}
	fns := 0
	for name, res := range mapping(doc, "Resources") {
		if str(res, "Type") != "AWS::Serverless::Function" {
			continue
		}
		fns++
		md := mapping(res, "Metadata")
		df := path.Join("lambda", str(md, "DockerContext"), str(md, "Dockerfile"))
		if _, err := os.Stat(filepath.FromSlash(df)); err != nil {
			t.Errorf("%s: Dockerfile %s: %v", name, df, err)
			continue
		}
		if parseDockerfile(t, filepath.FromSlash(df)).stage(str(md, "DockerBuildTarget")) == nil {
			t.Errorf("%s: build target %q not in %s", name, str(md, "DockerBuildTarget"), df)
		}
		if str(res, "Properties", "FunctionUrlConfig", "AuthType") == "" {
			t.Errorf("%s has no Function URL", name)
		}
		vars := map[string]any{}
		for _, m := range []map[string]any{global, mapping(res, "Properties", "Environment", "Variables")} {
			for k, v := range m {
				vars[k] = v
			}
		}
		for k, v := range vars {
			if isSecretEnv(k) {
				tv, ok := v.(tagged)
				if !ok || !strings.Contains(tv.val.(string), "{{resolve:secretsmanager:") {
					t.Errorf("%s: %s must be a Secrets Manager dynamic reference", name, k)
				}
			}
		}
	}
	if fns != 2 {
		t.Errorf("%d functions, want api and worker", fns)
	}
}
