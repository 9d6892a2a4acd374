package infra

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// cloudBuild is the part of cloudbuild.yaml the tests read.
type cloudBuild struct {
	Substitutions map[string]string `yaml:"substitutions"`
	Options       struct {
		SubstitutionOption string `yaml:"substitutionOption"`
	} `yaml:"options"`
	Steps []struct {
		ID         string   `yaml:"id"`
		Name       string   `yaml:"name"`
		Entrypoint string   `yaml:"entrypoint"`
		Args       []string `yaml:"args"`
		WaitFor    []string `yaml:"waitFor"`
	} `yaml:"steps"`
}

// The built-in substitutions of Cloud Build.
var builtinSubs = []string{"PROJECT_ID", "PROJECT_NUMBER", "LOCATION", "BUILD_ID", "COMMIT_SHA", "SHORT_SHA",
	"REVISION_ID", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME", "REF_NAME", "TRIGGER_NAME",
	"TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT"}

func loadCloudBuild(t *testing.T) *cloudBuild {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "cloudbuild.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cb cloudBuild
	if err := yaml.Unmarshal(b, &cb); err != nil {
		t.Fatalf("cloudbuild.yaml: %v", err)
	}
	return &cb
}

// script returns a step's shell script (entrypoint sh or bash, args -c
// SCRIPT).
func (cb *cloudBuild) script(t *testing.T, id string) (image, script string, waitFor []string) {
	t.Helper()
	for _, s := range cb.Steps {
		if s.ID != id {
			continue
		}
		if (s.Entrypoint != "bash" && s.Entrypoint != "sh") || len(s.Args) != 2 || s.Args[0] != "-c" {
			t.Fatalf("cloudbuild.yaml step %s: want entrypoint bash or sh with args [-c, SCRIPT]", id)
		}
		return s.Name, s.Args[1], s.WaitFor
	}
	t.Fatalf("cloudbuild.yaml has no step %s", id)
	return "", "", nil
}

var subRE = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// expand does what Cloud Build does to a step's arguments: $$ is a $, and
// $NAME or ${NAME} a substitution (built-in, or user-defined with a leading
// _; undefined user ones are empty with ALLOW_LOOSE). Anything else that
// looks like one is an error, as in Cloud Build: a shell variable must be
// written $$name.
func (cb *cloudBuild) expand(t *testing.T, id, s string, values map[string]string) string {
	t.Helper()
	return subRE.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sm := subRE.FindStringSubmatch(m)
		name := sm[1] + sm[2]
		if v, ok := values[name]; ok {
			return v
		}
		if v, ok := cb.Substitutions[name]; ok {
			return v
		}
		switch {
		case slices.Contains(builtinSubs, name):
			return ""
		case strings.HasPrefix(name, "_") && cb.Options.SubstitutionOption == "ALLOW_LOOSE":
			return ""
		}
		t.Errorf("cloudbuild.yaml step %s: %s is no substitution (write $$ for a shell variable)", id, m)
		return m
	})
}

// run runs a step's script (with values for the substitutions) in a copy
// of nothing but infra/terraform, with terraform, docker and gcloud
// replaced by stubs that record their arguments, and returns the record.
func (cb *cloudBuild) run(t *testing.T, id string, values map[string]string) string {
	t.Helper()
	_, script, _ := cb.script(t, id)
	script = cb.expand(t, id, script, values)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	work := filepath.Join(dir, "workspace")
	for _, d := range []string{bin, filepath.Join(work, "infra/terraform")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	record := filepath.Join(dir, "record")
	for _, tool := range []string{"terraform", "docker", "gcloud"} {
		stub := "#!/bin/sh\necho \"" + tool + " $*\" >> " + record + "\n"
		if err := os.WriteFile(filepath.Join(bin, tool), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("step %s with %v: %v\n%s", id, values, err, out)
	}
	b, _ := os.ReadFile(record)
	return string(b)
}

// goMinor is the go directive of go.mod as major.minor (1.26).
func goMinor(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	sm := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if sm == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(sm[1])
}

// TestCloudBuild checks cloudbuild.yaml: the checks, the test suites (the
// emulator and end-to-end ones in an image with gcloud), the image build
// and push, plan on every build and apply only on the deploy branch.
func TestCloudBuild(t *testing.T) {
	cb := loadCloudBuild(t)
	if cb.Substitutions["_DEPLOY_BRANCH"] != "main" {
		t.Errorf("_DEPLOY_BRANCH defaults to %q, want main", cb.Substitutions["_DEPLOY_BRANCH"])
	}
	for _, s := range cb.Steps {
		if strings.HasPrefix(s.Name, "golang:") && s.Name != "golang:"+goMinor(t) {
			t.Errorf("step %s runs %s, but go.mod says go %s", s.ID, s.Name, goMinor(t))
		}
		for _, a := range s.Args {
			cb.expand(t, s.ID, a, nil) // every $ is a substitution or escaped
		}
	}
	contains := func(id string, wants ...string) string {
		t.Helper()
		_, s, _ := cb.script(t, id)
		flat := strings.Join(strings.Fields(s), " ")
		for _, w := range wants {
			if !strings.Contains(flat, w) {
				t.Errorf("step %s does not run %q", id, w)
			}
		}
		return s
	}
	contains("fmt-vet", "gofmt -l", "go vet ./...")
	contains("unit", "go test", "CI=true", "bubblewrap", "infra/cloudbuild-emulated.sh")
	img, _, _ := cb.script(t, "emulators-e2e")
	if !strings.Contains(img, "google-cloud-cli") {
		t.Errorf("step emulators-e2e runs in %s, which has no gcloud emulators", img)
	}
	contains("emulators-e2e", "/go-shared/go/bin", "CI=true go test", "infra/cloudbuild-emulated.sh")
	out, err := exec.Command("bash", filepath.Join(repoRoot, "infra/cloudbuild-emulated.sh")).Output()
	if err != nil {
		t.Fatalf("infra/cloudbuild-emulated.sh: %v", err)
	}
	for _, want := range []string{"/e2e", "/adapters/firestore", "/adapters/pubsub", "/functions/cloudrun", "/emulators/gcloud"} {
		if !strings.Contains(string(out), "github.com/tollgate-ci/tollgate"+want+"\n") {
			t.Errorf("infra/cloudbuild-emulated.sh does not list %s:\n%s", want, out)
		}
	}

	// The image built is the image pushed and the image Terraform deploys.
	vals := map[string]string{"PROJECT_ID": "demo-project", "BUILD_ID": "b-1"}
	built := cb.run(t, "image", vals)
	image := "us-central1-docker.pkg.dev/demo-project/tollgate/functions:b-1"
	if !strings.Contains(built, "docker build") || !strings.Contains(built, "-t "+image+" .") ||
		!strings.Contains(built, "--target worker") {
		t.Errorf("step image builds:\n%s\nwant the functions image %s and the worker target", built, image)
	}
	if pushed := cb.run(t, "push", vals); !strings.Contains(pushed, "docker push "+image) {
		t.Errorf("step push pushes:\n%s\nwant %s", pushed, image)
	}

	// Plan on every build, for any branch; apply only on main, not for a
	// pull request, and only after the plan.
	for _, c := range []struct {
		branch, pr string
		apply      bool
	}{{"main", "", true}, {"feature", "", false}, {"main", "12", false}, {"", "", false}} {
		v := map[string]string{"PROJECT_ID": "demo-project", "BUILD_ID": "b-1", "BRANCH_NAME": c.branch,
			"_PR_NUMBER": c.pr, "_DEPLOY_BUCKET": "demo-deploy"}
		plan := cb.run(t, "plan", v)
		if !strings.Contains(plan, "terraform plan") || !strings.Contains(plan, "-var=image="+image) ||
			!strings.Contains(plan, "-backend-config=bucket=demo-deploy") {
			t.Errorf("branch %q: step plan runs\n%s\nwant terraform init on the deploy bucket and plan with the built image", c.branch, plan)
		}
		if strings.Contains(plan, "apply") {
			t.Errorf("step plan applies:\n%s", plan)
		}
		applied := strings.Contains(cb.run(t, "apply", v), "terraform apply")
		if applied != c.apply {
			t.Errorf("branch %q, pull request %q: applied %v, want %v", c.branch, c.pr, applied, c.apply)
		}
	}
	if _, _, wf := cb.script(t, "apply"); !slices.Contains(wf, "plan") {
		t.Errorf("step apply waits for %q, want plan", wf)
	}
	for _, s := range cb.Steps {
		if s.ID != "apply" && strings.Contains(strings.Join(s.Args, " "), "terraform apply") {
			t.Errorf("step %s runs terraform apply; only the gated apply step may", s.ID)
		}
	}
	// The image waits for the tests.
	if _, _, wf := cb.script(t, "image"); !slices.Contains(wf, "unit") || !slices.Contains(wf, "emulators-e2e") {
		t.Errorf("step image waits for %q, want the test steps", wf)
	}
}

// TestDockerfile checks the Dockerfile against what the deployment runs:
// the functions image is the default target, the worker image has git and
// bubblewrap, both are built with go.mod's Go.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	type stage struct {
		from, name string
		lines      []string
	}
	var stages []*stage
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if strings.EqualFold(f[0], "FROM") {
			s := &stage{from: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				s.name = f[3]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, l)
		}
	}
	if len(stages) < 3 {
		t.Fatalf("Dockerfile: %d stages, want build, worker and functions", len(stages))
	}
	text := func(s *stage) string { return strings.Join(s.lines, "\n") }
	if stages[0].from != "golang:"+goMinor(t) {
		t.Errorf("Dockerfile builds with %s, want golang:%s (go.mod)", stages[0].from, goMinor(t))
	}
	for _, pkg := range []string{"./functions/cmd/tollgate-functions", "./cmd/tollgate"} {
		if !strings.Contains(text(stages[0]), pkg) {
			t.Errorf("Dockerfile does not build %s", pkg)
		}
	}
	last := stages[len(stages)-1]
	if last.name != "functions" || !strings.Contains(text(last), `ENTRYPOINT ["/usr/local/bin/tollgate-functions"]`) {
		t.Error("Dockerfile: the last (default) stage must be the functions image running tollgate-functions")
	}
	var worker *stage
	for _, s := range stages {
		if s.name == "worker" {
			worker = s
		}
	}
	if worker == nil {
		t.Fatal("Dockerfile has no worker stage")
	}
	for _, want := range []string{"git", "bubblewrap", "/usr/local/bin/tollgate"} {
		if !strings.Contains(text(worker), want) {
			t.Errorf("Dockerfile: the worker image lacks %s", want)
		}
	}
	// Terraform's image variable names the same image.
	m := load(t)
	if d := src(t, m.variables["image"], "description"); !strings.Contains(d, "Dockerfile") || !strings.Contains(d, "functions/cmd/tollgate-functions") {
		t.Errorf("variable image: description %s should name the Dockerfile's functions image", d)
	}
}
