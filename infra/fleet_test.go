package infra

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// startupArgs returns the names the instance template passes to
// templatefile for the start-up script.
func startupArgs(t *testing.T, m *module) []string {
	t.Helper()
	tmpl := m.resource(t, "google_compute_instance_template", "worker")
	md, ok := tmpl.Body.Attributes["metadata"]
	if !ok {
		t.Fatal("google_compute_instance_template.worker has no metadata")
	}
	obj, ok := md.Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		t.Fatal("google_compute_instance_template.worker: metadata is not an object")
	}
	for _, it := range obj.Items {
		k := hcl.ExprAsKeyword(it.KeyExpr)
		if k == "" {
			if v, diags := it.KeyExpr.Value(nil); !diags.HasErrors() && v.Type() == cty.String {
				k = v.AsString()
			}
		}
		if k != "startup-script" {
			continue
		}
		call, ok := it.ValueExpr.(*hclsyntax.FunctionCallExpr)
		if !ok || call.Name != "templatefile" || len(call.Args) != 2 {
			t.Fatal("startup-script is not templatefile(\"${path.module}/worker-startup.sh.tftpl\", {...})")
		}
		args, ok := call.Args[1].(*hclsyntax.ObjectConsExpr)
		if !ok {
			t.Fatal("startup-script: templatefile's variables are not an object")
		}
		var names []string
		for _, a := range args.Items {
			names = append(names, hcl.ExprAsKeyword(a.KeyExpr))
		}
		return names
	}
	t.Fatal("google_compute_instance_template.worker: no startup-script")
	return nil
}

// renderStartup renders worker-startup.sh.tftpl as Terraform would.
func renderStartup(t *testing.T, vars map[string]cty.Value) string {
	t.Helper()
	p := filepath.Join(dir, "worker-startup.sh.tftpl")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	e, diags := hclsyntax.ParseTemplate(b, p, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	v, diags := e.Value(&hcl.EvalContext{Variables: vars})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	return v.AsString()
}

// TestWorkerStartup renders the worker VMs' start-up script and checks it:
// it is valid bash, installs git and bubblewrap, runs `tollgate worker
// --backend gcp` in the sandbox with the labels, with flags the worker
// has, and gives a worker time to end its job INTERRUPTED on shutdown.
func TestWorkerStartup(t *testing.T) {
	m := load(t)
	args := startupArgs(t, m)
	b, _ := os.ReadFile(filepath.Join(dir, "worker-startup.sh.tftpl"))
	e, _ := hclsyntax.ParseTemplate(b, "worker-startup.sh.tftpl", hcl.Pos{Line: 1, Column: 1})
	for _, tr := range e.Variables() {
		if !slices.Contains(args, tr.RootName()) {
			t.Errorf("worker-startup.sh.tftpl uses %s, which the instance template does not pass", tr.RootName())
		}
	}

	for _, creds := range []bool{false, true} {
		vars := map[string]cty.Value{
			"jobs_per_vm":            cty.NumberIntVal(2),
			"binary_url":             cty.StringVal("gs://demo-project-tollgate-config/bin/tollgate"),
			"project":                cty.StringVal("demo-project"),
			"config_url":             cty.StringVal("gs://demo-project-tollgate-config/tollgate.yaml"),
			"blobs_bucket":           cty.StringVal("demo-project-tollgate-artifacts"),
			"prefix":                 cty.StringVal("tollgate"),
			"labels":                 cty.StringVal("os=linux,pool=large"),
			"grace":                  cty.StringVal("10s"),
			"stop_timeout_seconds":   cty.NumberIntVal(45),
			"gerrit_credentials":     cty.BoolVal(creds),
			"gerrit_user_secret":     cty.StringVal("tollgate-gerrit-user"),
			"gerrit_password_secret": cty.StringVal("tollgate-gerrit-password"),
		}
		for _, a := range args {
			if _, ok := vars[a]; !ok {
				t.Errorf("the instance template passes %s, which this test does not know", a)
			}
		}
		script := renderStartup(t, vars)
		wrapper := between(t, script, "<<'WRAPPER'\n", "\nWRAPPER\n")
		unit := between(t, script, "<<'UNIT'\n", "\nUNIT\n")
		if bash, err := exec.LookPath("bash"); err == nil {
			for name, s := range map[string]string{"start-up script": script, "worker wrapper": wrapper} {
				cmd := exec.Command(bash, "-n")
				cmd.Stdin = strings.NewReader(s)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("%s (gerrit_credentials %v) is not valid bash: %v\n%s", name, creds, err, out)
				}
			}
		}
		for _, want := range []string{"install -y", " git ", " bubblewrap "} {
			if !strings.Contains(script, want) {
				t.Errorf("the start-up script does not install git and bubblewrap (no %q)", want)
			}
		}
		flat := strings.Join(strings.Fields(wrapper), " ")
		for _, want := range []string{"exec /usr/local/bin/tollgate", "worker --backend gcp", "--sandbox bwrap",
			"--labels 'os=linux,pool=large'", "--grace 10s", "--project 'demo-project'"} {
			if !strings.Contains(flat, want) {
				t.Errorf("the worker wrapper lacks %q:\n%s", want, wrapper)
			}
		}
		if got := strings.Contains(flat, "--gerrit-password-env"); got != creds {
			t.Errorf("gerrit_credentials %v: the wrapper passes Gerrit credentials: %v", creds, got)
		}
		checkWorkerFlags(t, wrapper)

		// Shutdown: SIGTERM to the worker alone, and the time to stop the
		// job's processes (--grace), report it (10 s) and a margin, within
		// Compute Engine's shutdown period of about 90 s.
		for _, want := range []string{"KillMode=mixed", "KillSignal=SIGTERM", "After=network-online.target", "Restart=always"} {
			if !strings.Contains(unit, want) {
				t.Errorf("the systemd unit lacks %s", want)
			}
		}
		sm := regexp.MustCompile(`TimeoutStopSec=(\d+)`).FindStringSubmatch(unit)
		if sm == nil {
			t.Fatal("the systemd unit sets no TimeoutStopSec")
		}
		if stop, _ := strconv.Atoi(sm[1]); stop < 10+10+10 || stop > 80 {
			t.Errorf("TimeoutStopSec=%d: want room for --grace 10s + 10 s to report + a margin, under Compute Engine's ~90 s", stop)
		}
		if !strings.Contains(script, "seq 1 2") {
			t.Error("the start-up script does not start jobs_per_vm workers")
		}
	}

	// The autoscaler's target per VM is the number of worker processes.
	as := m.resource(t, "google_compute_autoscaler", "worker")
	for _, p := range blocks(as, "autoscaling_policy") {
		for _, mb := range blocks(p, "metric") {
			if got := src(t, mb, "single_instance_assignment"); got != "var.jobs_per_vm" {
				t.Errorf("autoscaler: single_instance_assignment = %s, want var.jobs_per_vm (per-group metric)", got)
			}
			if got := src(t, mb, "filter"); !strings.Contains(got, `resource.type = \"global\"`) {
				t.Errorf("autoscaler: filter %s: ci_job_queue_len is written to the global resource", got)
			}
		}
	}
	// The template waits for the objects and grants the VMs need at boot.
	deps := src(t, m.resource(t, "google_compute_instance_template", "worker"), "depends_on")
	for _, want := range []string{"google_storage_bucket_object.config", "google_storage_bucket_iam_member.worker_config"} {
		if !strings.Contains(deps, want) {
			t.Errorf("google_compute_instance_template.worker: depends_on lacks %s", want)
		}
	}
	md := src(t, m.resource(t, "google_compute_instance_template", "worker"), "metadata")
	if !strings.Contains(md, "google_storage_bucket_object.worker_binary[each.key]") {
		t.Error("google_compute_instance_template.worker: the metadata does not name the uploaded binary, so a new binary would not roll out")
	}
}

func between(t *testing.T, s, start, end string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("no %q in the start-up script", start)
	}
	s = s[i+len(start):]
	j := strings.Index(s, end)
	if j < 0 {
		t.Fatalf("no %q in the start-up script", end)
	}
	return s[:j]
}

// checkWorkerFlags checks that every --flag the wrapper passes is one
// `tollgate worker` defines (cmd/tollgate/worker.go).
func checkWorkerFlags(t *testing.T, wrapper string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "cmd/tollgate/worker.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, sm := range regexp.MustCompile(`fs\.[A-Za-z]+\("([a-z-]+)"`).FindAllStringSubmatch(string(b), -1) {
		defined[sm[1]] = true
	}
	flag := regexp.MustCompile(`(?:^|\s|\()--([a-z-]+)`)
	for _, line := range strings.Split(wrapper, "\n") {
		if strings.Contains(line, "gcloud ") {
			continue // gcloud's own flags
		}
		for _, sm := range flag.FindAllStringSubmatch(line, -1) {
			if !defined[sm[1]] {
				t.Errorf("the worker wrapper passes --%s, which tollgate worker does not define", sm[1])
			}
		}
	}
}
