// Package infra holds the Terraform of a Google Cloud deployment
// (infra/terraform) and the tests that check it against the code: the
// providers cannot be downloaded where the tests run, so instead of
// `terraform validate` the HCL is parsed here and compared with what the
// code declares.
package infra

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"github.com/tollgate-ci/tollgate/adapters/firestore"
	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/metrics"
	"github.com/tollgate-ci/tollgate/functions/cloudrun"
)

const dir = "terraform"

// module is the parsed Terraform of dir.
type module struct {
	locals    map[string]hclsyntax.Expression
	variables map[string]*hclsyntax.Block
	resources map[string]*hclsyntax.Block // "type.name"
	outputs   map[string]*hclsyntax.Block
	done      map[string]cty.Value // locals evaluated so far
}

func load(t *testing.T) *module {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .tf files in %s: %v", dir, err)
	}
	m := &module{
		locals:    map[string]hclsyntax.Expression{},
		variables: map[string]*hclsyntax.Block{},
		resources: map[string]*hclsyntax.Block{},
		outputs:   map[string]*hclsyntax.Block{},
		done:      map[string]cty.Value{},
	}
	p := hclparse.NewParser()
	for _, name := range files {
		f, diags := p.ParseHCLFile(name)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", name, diags.Error())
		}
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			switch b.Type {
			case "locals":
				for n, a := range b.Body.Attributes {
					if _, dup := m.locals[n]; dup {
						t.Errorf("local.%s is defined twice", n)
					}
					m.locals[n] = a.Expr
				}
			case "variable":
				m.variables[b.Labels[0]] = b
			case "resource":
				k := b.Labels[0] + "." + b.Labels[1]
				if _, dup := m.resources[k]; dup {
					t.Errorf("resource %s is defined twice", k)
				}
				m.resources[k] = b
			case "output":
				m.outputs[b.Labels[0]] = b
			}
		}
	}
	return m
}

// testVars are the values of the variables without a default, for the tests.
var testVars = map[string]cty.Value{
	"project":     cty.StringVal("demo-project"),
	"image":       cty.StringVal("us-central1-docker.pkg.dev/demo-project/tollgate/functions:test"),
	"config_file": cty.StringVal("tollgate.yaml"),
}

// ctx is an evaluation context with var.* set to the variables' defaults
// (testVars for those without one).
func (m *module) ctx(t *testing.T) *hcl.EvalContext {
	t.Helper()
	vars := map[string]cty.Value{}
	for n, v := range testVars {
		if _, ok := m.variables[n]; ok {
			vars[n] = v
		}
	}
	for n, b := range m.variables {
		if a, ok := b.Body.Attributes["default"]; ok {
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("variable %s default: %s", n, diags.Error())
			}
			vars[n] = v
		}
	}
	locals := map[string]cty.Value{}
	for n, v := range m.done {
		locals[n] = v
	}
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{"var": cty.ObjectVal(vars), "local": cty.ObjectVal(locals)},
		Functions: funcs,
	}
}

// funcs are the Terraform functions the locals the tests read call.
var funcs = map[string]function.Function{
	"keys":         stdlib.KeysFunc,
	"lookup":       stdlib.LookupFunc,
	"merge":        stdlib.MergeFunc,
	"replace":      stdlib.ReplaceFunc,
	"join":         stdlib.JoinFunc,
	"distinct":     stdlib.DistinctFunc,
	"jsonencode":   stdlib.JSONEncodeFunc,
	"base64encode": base64EncodeFunc,
	"toset":        convertFunc(cty.Set(cty.DynamicPseudoType)),
	"tostring":     convertFunc(cty.String),
}

// base64EncodeFunc is Terraform's base64encode.
var base64EncodeFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
	},
})

func convertFunc(want cty.Type) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType}},
		Type: func(args []cty.Value) (cty.Type, error) {
			v, err := convert.Convert(args[0], want)
			if err != nil {
				return cty.NilType, err
			}
			return v.Type(), nil
		},
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) { return convert.Convert(args[0], want) },
	})
}

// local evaluates local.name, which may refer to variables and locals only.
func (m *module) local(t *testing.T, name string) cty.Value {
	t.Helper()
	e, ok := m.locals[name]
	if !ok {
		t.Fatalf("local.%s is not defined", name)
	}
	if v, ok := m.done[name]; ok {
		return v
	}
	v := m.eval(t, "local."+name, e, nil)
	m.done[name] = v
	return v
}

// eval evaluates e (what names it in messages) after the locals it refers
// to, with extra root variables (each, resources) besides var and local.
func (m *module) eval(t *testing.T, what string, e hcl.Expression, extra map[string]cty.Value) cty.Value {
	t.Helper()
	for _, tr := range e.Variables() {
		if tr.RootName() != "local" || len(tr) < 2 {
			continue
		}
		if a, ok := tr[1].(hcl.TraverseAttr); ok && "local."+a.Name != what {
			m.local(t, a.Name)
		}
	}
	ctx := m.ctx(t)
	for k, v := range extra {
		ctx.Variables[k] = v
	}
	v, diags := e.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", what, diags.Error())
	}
	return v
}

// attrValue evaluates attribute name of b.
func (m *module) attrValue(t *testing.T, b *hclsyntax.Block, name string, extra map[string]cty.Value) cty.Value {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %s: no attribute %s", b.Type, strings.Join(b.Labels, "."), name)
	}
	return m.eval(t, strings.Join(b.Labels, ".")+"."+name, a.Expr, extra)
}

// resource returns the resource block, failing the test if it is missing.
func (m *module) resource(t *testing.T, typ, name string) *hclsyntax.Block {
	t.Helper()
	b, ok := m.resources[typ+"."+name]
	if !ok {
		t.Fatalf("resource %s.%s is not declared", typ, name)
	}
	return b
}

// src is the source text of an attribute of b ("" if absent).
func src(t *testing.T, b *hclsyntax.Block, attr string) string {
	t.Helper()
	a, ok := b.Body.Attributes[attr]
	if !ok {
		return ""
	}
	r := a.Expr.Range()
	data, err := os.ReadFile(r.Filename)
	if err != nil {
		t.Fatal(err)
	}
	return string(r.SliceBytes(data))
}

func blocks(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, c := range b.Body.Blocks {
		if c.Type == typ {
			out = append(out, c)
		}
	}
	return out
}

func strs(t *testing.T, v cty.Value) []string {
	t.Helper()
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.Type() != cty.String {
			t.Fatalf("want a list of strings, got an element of %s", e.Type().FriendlyName())
		}
		out = append(out, e.AsString())
	}
	return out
}

func attr(v cty.Value, name string) cty.Value { return v.GetAttr(name) }

func TestActionsAreDeployed(t *testing.T) {
	m := load(t)
	if got := strs(t, m.local(t, "actions")); !slices.Equal(got, controller.Actions) {
		t.Errorf("local.actions = %q, want controller.Actions %q", got, controller.Actions)
	}
	wantHTTP := []string{cloudrun.FnGerritWebhook, cloudrun.FnAPI, cloudrun.FnWorkerAPI}
	if got := strs(t, m.local(t, "http_functions")); !slices.Equal(got, wantHTTP) {
		t.Errorf("local.http_functions = %q, want %q", got, wantHTTP)
	}

	// Every function (local.functions: the actions and the HTTP functions)
	// is a Cloud Run service with its own service account.
	fns := m.locals["functions"]
	if fns == nil {
		t.Fatal("local.functions is not defined")
	}
	for _, r := range []string{"google_cloud_run_v2_service.function", "google_service_account.function"} {
		typ, name, _ := strings.Cut(r, ".")
		if got := src(t, m.resource(t, typ, name), "for_each"); got != "local.functions" {
			t.Errorf("%s: for_each = %q, want local.functions", r, got)
		}
	}
	svc := m.resource(t, "google_cloud_run_v2_service", "function")
	tmpl := blocks(svc, "template")
	if len(tmpl) != 1 {
		t.Fatal("google_cloud_run_v2_service.function: want one template block")
	}
	for _, a := range []string{"service_account", "timeout", "max_instance_request_concurrency"} {
		if src(t, tmpl[0], a) == "" {
			t.Errorf("google_cloud_run_v2_service.function: template sets no %s", a)
		}
	}
	if len(blocks(tmpl[0], "scaling")) != 1 {
		t.Error("google_cloud_run_v2_service.function: template has no scaling (maximum instances)")
	}
	var target bool
	for _, c := range blocks(tmpl[0], "containers") {
		for _, e := range blocks(c, "env") {
			if src(t, e, "name") == `"FUNCTION_TARGET"` && src(t, e, "value") == "each.key" {
				target = true
			}
		}
	}
	if !target {
		t.Error("google_cloud_run_v2_service.function: no env FUNCTION_TARGET = each.key")
	}

	// Every action has a topic and a push subscription with retries and a
	// dead-letter policy; the dead-letter topic exists.
	for _, r := range []string{"google_pubsub_topic.action", "google_pubsub_subscription.push"} {
		typ, name, _ := strings.Cut(r, ".")
		if got := src(t, m.resource(t, typ, name), "for_each"); got != "toset(local.actions)" {
			t.Errorf("%s: for_each = %q, want toset(local.actions)", r, got)
		}
	}
	sub := m.resource(t, "google_pubsub_subscription", "push")
	for _, b := range []string{"push_config", "retry_policy", "dead_letter_policy"} {
		if len(blocks(sub, b)) != 1 {
			t.Errorf("google_pubsub_subscription.push: want one %s block", b)
		}
	}
	if dl := blocks(sub, "dead_letter_policy"); len(dl) == 1 {
		if got := src(t, dl[0], "dead_letter_topic"); got != "google_pubsub_topic.dead_letter.id" {
			t.Errorf("dead_letter_policy.dead_letter_topic = %q", got)
		}
		if got := src(t, dl[0], "max_delivery_attempts"); got != "var.max_delivery_attempts" {
			t.Errorf("dead_letter_policy.max_delivery_attempts = %q", got)
		}
	}
	m.resource(t, "google_pubsub_topic", "dead_letter")

	// Topic names are the adapter's: {prefix}-{action}, {prefix}-dead-letter.
	prefix := m.ctx(t).Variables["var"].GetAttr("prefix").AsString()
	names := m.local(t, "topic_name")
	for _, a := range controller.Actions {
		// Actions are plain names, which the adapter does not escape.
		if !names.Type().HasAttribute(a) {
			t.Errorf("local.topic_name has no %s", a)
			continue
		}
		if got, want := names.GetAttr(a).AsString(), prefix+"-"+a; got != want {
			t.Errorf("local.topic_name[%s] = %q, want %q", a, got, want)
		}
	}
	if got, want := m.local(t, "dead_letter_topic").AsString(), prefix+"-dead-letter"; got != want {
		t.Errorf("local.dead_letter_topic = %q, want %q", got, want)
	}

	// max_delivery_attempts defaults within Pub/Sub's bounds.
	def, _ := m.ctx(t).Variables["var"].GetAttr("max_delivery_attempts").AsBigFloat().Int64()
	if def < pubsub.MinMaxAttempts || def > pubsub.MaxMaxAttempts {
		t.Errorf("var.max_delivery_attempts defaults to %d, outside %d..%d", def, pubsub.MinMaxAttempts, pubsub.MaxMaxAttempts)
	}
}

func TestSchedulerJobsTargetTopics(t *testing.T) {
	m := load(t)
	actions := strs(t, m.local(t, "actions"))
	seen := map[string]bool{}
	for _, l := range []string{"schedules", "postsubmit_schedules"} {
		for it := m.local(t, l).ElementIterator(); it.Next(); {
			k, v := it.Element()
			a := attr(v, "action").AsString()
			seen[a] = true
			if !slices.Contains(actions, a) {
				t.Errorf("local.%s[%s] targets %q, which has no topic", l, k.AsString(), a)
			}
		}
	}
	for _, a := range []string{controller.Tick, controller.QueuePostsubmitJobs, controller.ReapDeadWorkers,
		controller.DeleteStaleJobs, controller.DeleteExpiredLogs, controller.CacheCleanup} {
		if !seen[a] {
			t.Errorf("no Cloud Scheduler job publishes %s", a)
		}
	}
	// How each job publishes is checked by TestSchedulerMessagesDecode.
}

func TestFirestoreIndexes(t *testing.T) {
	m := load(t)
	var got []string
	for it := m.local(t, "firestore_indexes").ElementIterator(); it.Next(); {
		_, v := it.Element()
		got = append(got, attr(v, "collection").AsString()+"("+strings.Join(strs(t, attr(v, "fields")), ", ")+")")
	}
	var want []string
	for _, x := range firestore.Indexes() {
		want = append(want, x.String())
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("index %s, which the Firestore adapter needs, is not declared", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("index %s is declared but the Firestore adapter does not need it", g)
		}
	}

	type override struct {
		coll, field  string
		ttl, noIndex bool
	}
	var gotO []override
	for it := m.local(t, "firestore_field_overrides").ElementIterator(); it.Next(); {
		_, v := it.Element()
		gotO = append(gotO, override{attr(v, "collection").AsString(), attr(v, "field").AsString(),
			attr(v, "ttl").True(), attr(v, "no_index").True()})
	}
	var wantO []override
	for _, o := range firestore.FieldOverrides() {
		wantO = append(wantO, override{o.Collection, o.Field, o.TTL, o.NoIndex})
	}
	if !slices.Equal(gotO, wantO) {
		t.Errorf("local.firestore_field_overrides = %+v, want firestore.FieldOverrides() %+v", gotO, wantO)
	}
	for _, r := range []string{"google_firestore_database.db", "google_firestore_index.index", "google_firestore_field.override"} {
		typ, name, _ := strings.Cut(r, ".")
		m.resource(t, typ, name)
	}
}

func TestMetricDescriptors(t *testing.T) {
	m := load(t)
	kinds := map[metrics.Kind]string{metrics.Gauge: "GAUGE", metrics.Counter: "COUNTER", metrics.Distribution: "DISTRIBUTION"}
	got := map[string]cty.Value{}
	for it := m.local(t, "metrics").ElementIterator(); it.Next(); {
		_, v := it.Element()
		got[attr(v, "name").AsString()] = v
	}
	for _, d := range metrics.Catalogue {
		v, ok := got[d.Name]
		if !ok {
			t.Errorf("metric %s has no descriptor", d.Name)
			continue
		}
		if k := attr(v, "kind").AsString(); k != kinds[d.Kind] {
			t.Errorf("metric %s: kind %s, want %s", d.Name, k, kinds[d.Kind])
		}
		if u := attr(v, "unit").AsString(); u != d.Unit {
			t.Errorf("metric %s: unit %q, want %q", d.Name, u, d.Unit)
		}
		if l := strs(t, attr(v, "labels")); !slices.Equal(l, d.Labels) {
			t.Errorf("metric %s: labels %q, want %q", d.Name, l, d.Labels)
		}
		delete(got, d.Name)
	}
	for n := range got {
		t.Errorf("descriptor %s is not in metrics.Catalogue", n)
	}
	r := m.resource(t, "google_monitoring_metric_descriptor", "metric")
	if f := src(t, r, "for_each"); !strings.Contains(f, "local.metrics") {
		t.Errorf("google_monitoring_metric_descriptor.metric: for_each = %q, want one over local.metrics", f)
	}
}

func TestSecrets(t *testing.T) {
	m := load(t)
	sec := m.local(t, "secrets")
	envs := map[string]string{} // env var => secret
	for it := sec.ElementIterator(); it.Next(); {
		k, v := it.Element()
		envs[attr(v, "env").AsString()] = k.AsString()
	}
	vars := m.ctx(t).Variables["var"]
	for _, env := range []string{cloudrun.EnvWebhookToken, cloudrun.EnvEnrollSecret,
		vars.GetAttr("gerrit_user_env").AsString(), vars.GetAttr("gerrit_password_env").AsString()} {
		if _, ok := envs[env]; !ok {
			t.Errorf("no secret provides %s", env)
		}
	}
	m.resource(t, "google_secret_manager_secret", "secret")

	// Gerrit's credentials go to the actions that call Gerrit, and no others.
	for _, name := range []string{"gerrit-user", "gerrit-password"} {
		got := strs(t, attr(sec.GetAttr(name), "functions"))
		slices.Sort(got)
		want := slices.Sorted(slices.Values(controller.GerritActions))
		if !slices.Equal(got, want) {
			t.Errorf("secret %s goes to %q, want exactly controller.GerritActions %q", name, got, want)
		}
	}

	// Each secret goes to functions that exist.
	fns := m.local(t, "functions")
	for it := sec.ElementIterator(); it.Next(); {
		k, v := it.Element()
		for _, f := range strs(t, attr(v, "functions")) {
			if !fns.Type().HasAttribute(f) {
				t.Errorf("secret %s goes to function %q, which is not deployed", k.AsString(), f)
			}
		}
	}
}

// TestFunctionSettings checks the defaults against Pub/Sub's push deadline:
// an event function must end before its push is redelivered.
func TestFunctionSettings(t *testing.T) {
	m := load(t)
	fns := m.local(t, "functions")
	if n := fns.LengthInt(); n != len(controller.Actions)+3 {
		t.Errorf("local.functions has %d functions, want %d (the actions and 3 HTTP functions)", n, len(controller.Actions)+3)
	}
	ack, _ := strconv.Atoi(src(t, m.resource(t, "google_pubsub_subscription", "push"), "ack_deadline_seconds"))
	if ack != 600 {
		t.Errorf("google_pubsub_subscription.push: ack_deadline_seconds = %d, want 600 (the most Pub/Sub allows)", ack)
	}
	for it := fns.ElementIterator(); it.Next(); {
		k, v := it.Element()
		f := k.AsString()
		timeout, _ := attr(v, "timeout_seconds").AsBigFloat().Int64()
		if !attr(v, "http").True() && int(timeout) >= ack {
			t.Errorf("function %s: timeout %ds, not below the push deadline %ds", f, timeout, ack)
		}
		for _, a := range []string{"memory", "concurrency", "max_instances"} {
			if attr(v, a).IsNull() {
				t.Errorf("function %s: no %s", f, a)
			}
		}
	}
}

func TestVariablesAndOutputs(t *testing.T) {
	m := load(t)
	for n, b := range m.variables {
		if src(t, b, "description") == "" {
			t.Errorf("variable %s has no description", n)
		}
		if src(t, b, "type") == "" {
			t.Errorf("variable %s has no type", n)
		}
	}
	for _, o := range []string{"webhook_url", "ui_url"} {
		if _, ok := m.outputs[o]; !ok {
			t.Errorf("output %s is missing", o)
		}
	}
}

// TestTerraformFmt runs `terraform fmt -check` where terraform is installed.
func TestTerraformFmt(t *testing.T) {
	tf, err := exec.LookPath("terraform")
	if err != nil {
		t.Skip("terraform is not installed")
	}
	out, err := exec.Command(tf, "fmt", "-check", "-recursive", "-no-color", dir).CombinedOutput()
	if err != nil {
		t.Errorf("terraform fmt -check: %v; files to format:\n%s", err, out)
	}
}

// TestMetricReferences checks that every metric the dashboard, the alerts
// and the autoscaler name (${local.metric_prefix}NAME) is in the
// Catalogue, and that the autoscaler scales on the queue length.
func TestMetricReferences(t *testing.T) {
	m := load(t)
	re := regexp.MustCompile(`\$\{local\.metric_prefix\}([a-z0-9_]+)`)
	files, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, sm := range re.FindAllStringSubmatch(string(data), -1) {
			if _, ok := metrics.Lookup(sm[1]); !ok {
				t.Errorf("%s names metric %s, which is not in metrics.Catalogue", f, sm[1])
			}
		}
	}
	as := m.resource(t, "google_compute_autoscaler", "worker")
	var found bool
	for _, p := range blocks(as, "autoscaling_policy") {
		for _, mb := range blocks(p, "metric") {
			if src(t, mb, "name") == `"${local.metric_prefix}`+metrics.QueueLen+`"` {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("google_compute_autoscaler.worker does not scale on %s", metrics.QueueLen)
	}
	for _, r := range []string{"google_compute_instance_template.worker", "google_compute_instance_group_manager.worker", "google_monitoring_dashboard.tollgate"} {
		typ, name, _ := strings.Cut(r, ".")
		m.resource(t, typ, name)
	}
}
