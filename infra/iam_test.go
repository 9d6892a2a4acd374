package infra

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/tollgate-ci/tollgate/core/controller"
)

// strSet evaluates a list, set or tuple of strings.
func strSet(t *testing.T, v cty.Value) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, s := range strs(t, v) {
		out[s] = true
	}
	return out
}

// forEachKeys evaluates a resource's for_each and returns its keys.
func (m *module) forEachKeys(t *testing.T, typ, name string) map[string]cty.Value {
	t.Helper()
	b := m.resource(t, typ, name)
	v := m.attrValue(t, b, "for_each", nil)
	out := map[string]cty.Value{}
	if v.Type().IsSetType() || v.Type().IsListType() || v.Type().IsTupleType() {
		for _, s := range strs(t, v) {
			out[s] = cty.StringVal(s)
		}
		return out
	}
	for it := v.ElementIterator(); it.Next(); {
		k, e := it.Element()
		out[k.AsString()] = e
	}
	return out
}

func diffSets(got, want map[string]bool) (missing, extra []string) {
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return missing, extra
}

// TestPublishersMatchTheCode derives from the Go code the actions each
// function and the worker VMs defer, and checks that each identity may
// publish to exactly those topics: every topic a function publishes to is
// granted, and no other.
func TestPublishersMatchTheCode(t *testing.T) {
	m := load(t)
	g := parseCode(t)
	fns := m.local(t, "functions")
	pub := m.local(t, "publishes")

	derived := map[string]map[string]bool{}
	for _, a := range controller.Actions {
		derived[a] = g.action(t, a).defers
	}
	for f, dirs := range httpCode {
		derived[f] = g.packages(dirs...).defers
	}
	for it := fns.ElementIterator(); it.Next(); {
		k, _ := it.Element()
		f := k.AsString()
		want, ok := derived[f]
		if !ok {
			t.Errorf("function %s: the test does not know its code (add it to httpCode in code_test.go)", f)
			continue
		}
		if !pub.Type().HasAttribute(f) {
			t.Errorf("local.publishes has no entry for function %s, which defers %q", f, sortedKeys(want))
			continue
		}
		missing, extra := diffSets(strSet(t, pub.GetAttr(f)), want)
		if len(missing) > 0 {
			t.Errorf("function %s defers %q but local.publishes does not let it publish there", f, missing)
		}
		if len(extra) > 0 {
			t.Errorf("function %s may publish to %q, which its code never defers: remove them from local.publishes", f, extra)
		}
	}
	for it := pub.ElementIterator(); it.Next(); {
		k, _ := it.Element()
		if !fns.Type().HasAttribute(k.AsString()) {
			t.Errorf("local.publishes names %s, which is not a function", k.AsString())
		}
	}

	// The grant resource grants exactly local.publishes, each to its
	// function's own account on the action's topic.
	r := m.resource(t, "google_pubsub_topic_iam_member", "function_publisher")
	checkMember(t, r, "roles/pubsub.publisher", "google_pubsub_topic.action[each.value.action].id",
		"google_service_account.function[each.value.function].email")
	got := map[string]bool{}
	for k, v := range m.forEachKeys(t, "google_pubsub_topic_iam_member", "function_publisher") {
		f, a := attr(v, "function").AsString(), attr(v, "action").AsString()
		if k != f+"/"+a {
			t.Errorf("function_publisher key %s for %s/%s", k, f, a)
		}
		got[f+"/"+a] = true
	}
	want := map[string]bool{}
	for f, as := range derived {
		for a := range as {
			want[f+"/"+a] = true
		}
	}
	if missing, extra := diffSets(got, want); len(missing)+len(extra) > 0 {
		t.Errorf("google_pubsub_topic_iam_member.function_publisher: missing %q, extra %q", missing, extra)
	}

	// The worker VMs.
	w := g.packages(workerCode...).defers
	if missing, extra := diffSets(strSet(t, m.local(t, "worker_publishes")), w); len(missing)+len(extra) > 0 {
		t.Errorf("local.worker_publishes: the workers defer %q; missing %q, extra %q", sortedKeys(w), missing, extra)
	}
	r = m.resource(t, "google_pubsub_topic_iam_member", "worker_publisher")
	checkMember(t, r, "roles/pubsub.publisher", "google_pubsub_topic.action[each.key].id", "google_service_account.worker.email")
	if got := src(t, r, "for_each"); got != "toset(local.worker_publishes)" {
		t.Errorf("worker_publisher: for_each = %s, want toset(local.worker_publishes)", got)
	}

	// Cloud Scheduler publishes only to the scheduled actions' topics.
	sched := map[string]bool{}
	for _, l := range []string{"schedules", "postsubmit_schedules"} {
		for it := m.local(t, l).ElementIterator(); it.Next(); {
			_, v := it.Element()
			sched[attr(v, "action").AsString()] = true
		}
	}
	keys := map[string]bool{}
	for k := range m.forEachKeys(t, "google_pubsub_topic_iam_member", "scheduler_publisher") {
		keys[k] = true
	}
	if missing, extra := diffSets(keys, sched); len(missing)+len(extra) > 0 {
		t.Errorf("scheduler_publisher: missing %q, extra %q", missing, extra)
	}
	checkMember(t, m.resource(t, "google_pubsub_topic_iam_member", "scheduler_publisher"), "roles/pubsub.publisher",
		"google_pubsub_topic.action[each.key].id", "google_service_account.scheduler.email")
}

// checkMember checks an IAM member resource's role, resource and member
// expressions (the role as a literal).
func checkMember(t *testing.T, r *hclsyntax.Block, role, resource, member string) {
	t.Helper()
	name := strings.Join(r.Labels, ".")
	if got := src(t, r, "role"); got != `"`+role+`"` {
		t.Errorf("%s: role = %s, want %s", name, got, role)
	}
	var res string
	for _, a := range []string{"topic", "subscription", "bucket", "secret_id", "name", "service_account_id", "project"} {
		if s := src(t, r, a); s != "" {
			res = s
			break
		}
	}
	if res != resource {
		t.Errorf("%s: on %s, want %s", name, res, resource)
	}
	if got := src(t, r, "member"); got != `"serviceAccount:${`+member+`}"` {
		t.Errorf("%s: member = %s, want the account %s", name, got, member)
	}
}

// TestBucketsMatchTheCode derives from the code which identities read or
// write the artifacts bucket and use the cache, and checks the grants.
func TestBucketsMatchTheCode(t *testing.T) {
	m := load(t)
	g := parseCode(t)
	fb := m.local(t, "function_buckets")
	role := func(f, bucket string) string {
		if !fb.Type().HasAttribute(f) {
			return ""
		}
		v := fb.GetAttr(f)
		if !v.Type().HasAttribute(bucket) {
			return ""
		}
		return v.GetAttr(bucket).AsString()
	}
	check := func(f string, n needs) {
		switch blobs := role(f, "blobs"); {
		case n.blobs["write"] && blobs != "roles/storage.objectUser":
			t.Errorf("function %s writes artifacts but has %q on the artifacts bucket, want roles/storage.objectUser", f, blobs)
		case n.blobs["read"] && !n.blobs["write"] && blobs != "roles/storage.objectViewer":
			t.Errorf("function %s only reads artifacts but has %q on the artifacts bucket, want roles/storage.objectViewer", f, blobs)
		case len(n.blobs) == 0 && blobs != "":
			t.Errorf("function %s never touches artifacts but has %s on their bucket", f, blobs)
		}
		switch cache := role(f, "cache"); {
		case n.cache && cache != "roles/storage.objectUser":
			t.Errorf("function %s uses the cache but has %q on its bucket, want roles/storage.objectUser", f, cache)
		case !n.cache && cache != "":
			t.Errorf("function %s never uses the cache but has %s on its bucket", f, cache)
		}
	}
	for _, a := range controller.Actions {
		check(a, g.action(t, a))
	}
	for f, dirs := range httpCode {
		check(f, g.packages(dirs...))
	}
	for it := fb.ElementIterator(); it.Next(); {
		k, v := it.Element()
		if !m.local(t, "functions").Type().HasAttribute(k.AsString()) {
			t.Errorf("local.function_buckets names %s, which is not a function", k.AsString())
		}
		for it := v.ElementIterator(); it.Next(); {
			b, _ := it.Element()
			if b.AsString() != "blobs" && b.AsString() != "cache" {
				t.Errorf("local.function_buckets[%s] names bucket %s", k.AsString(), b.AsString())
			}
		}
	}
	r := m.resource(t, "google_storage_bucket_iam_member", "function_bucket")
	if got := src(t, r, "member"); got != `"serviceAccount:${google_service_account.function[each.value.function].email}"` {
		t.Errorf("function_bucket: member = %s", got)
	}
	for k, v := range m.forEachKeys(t, "google_storage_bucket_iam_member", "function_bucket") {
		f, b := attr(v, "function").AsString(), attr(v, "bucket").AsString()
		if got := attr(v, "role").AsString(); got != role(f, b) || k != f+"/"+b {
			t.Errorf("function_bucket[%s]: role %s, want local.function_buckets' %s", k, got, role(f, b))
		}
	}

	// The config: every function reads it, and only it.
	for _, n := range []string{"function_config", "worker_config"} {
		r := m.resource(t, "google_storage_bucket_iam_member", n)
		if got := src(t, r, "role"); got != `"roles/storage.objectViewer"` {
			t.Errorf("%s: role = %s, want roles/storage.objectViewer", n, got)
		}
		c := blocks(r, "condition")
		if len(c) != 1 || !strings.Contains(src(t, c[0], "expression"), "local.config_object_condition") {
			t.Errorf("%s: want a condition limiting it to the config object (local.config_object_condition)", n)
		}
	}
	if got := src(t, m.resource(t, "google_storage_bucket_iam_member", "function_config"), "for_each"); got != "local.functions" {
		t.Errorf("function_config: for_each = %s, want local.functions", got)
	}

	// The worker VMs write artifacts, and use the cache when the config has
	// one (functions/cloudrun BuildFleet opens it).
	wn := g.packages(workerCode...)
	fleet, err := os.ReadFile(filepath.Join(repoRoot, "functions/cloudrun/fleet.go"))
	if err != nil {
		t.Fatal(err)
	}
	wb := map[string]bool{}
	for k := range m.forEachKeys(t, "google_storage_bucket_iam_member", "worker_bucket") {
		wb[k] = true
	}
	if wn.blobs["write"] && !wb["blobs"] {
		t.Error("the workers write artifacts but worker_bucket does not grant the artifacts bucket")
	}
	if strings.Contains(string(fleet), "OpenCache(") && !wb["cache"] {
		t.Error("the workers open the cache (BuildFleet) but worker_bucket does not grant the cache bucket")
	}
	if got := src(t, m.resource(t, "google_storage_bucket_iam_member", "worker_bucket"), "role"); got != `"roles/storage.objectUser"` {
		t.Errorf("worker_bucket: role = %s", got)
	}
	if strings.Contains(string(fleet), "OpenMetrics(") {
		t.Error("BuildFleet opens metrics now: grant the worker roles/monitoring.metricWriter (iam.tf) and update this test")
	}
}

// The roles any identity may hold on the whole project, and the
// resource-level roles in use. Anything else needs a reason.
var (
	projectRoles  = []string{"roles/datastore.user", "roles/monitoring.metricWriter"}
	resourceRoles = []string{"roles/pubsub.publisher", "roles/pubsub.subscriber", "roles/storage.objectViewer",
		"roles/storage.objectUser", "roles/secretmanager.secretAccessor", "roles/run.invoker", "roles/iam.serviceAccountTokenCreator"}
)

// TestLeastPrivilege checks every IAM resource: only additive members (no
// binding or policy resource, which would take roles from others), no
// basic role (owner, editor, viewer) anywhere, only the allowed
// project-wide roles, and metric writing only where metrics are written.
func TestLeastPrivilege(t *testing.T) {
	m := load(t)
	roleRE := regexp.MustCompile(`"(roles/[A-Za-z.]+)"`)
	n := 0
	for k, r := range m.resources {
		typ := r.Labels[0]
		if !strings.Contains(typ, "_iam_") {
			continue
		}
		n++
		if !strings.HasSuffix(typ, "_iam_member") {
			t.Errorf("%s: use _iam_member resources (additive), not %s", k, typ)
			continue
		}
		role := src(t, r, "role")
		roles := roleRE.FindAllStringSubmatch(role, -1)
		if len(roles) == 0 {
			// A role from for_each: read them from the locals it uses.
			roles = roleRE.FindAllStringSubmatch(src(t, r, "for_each"), -1)
			if strings.Contains(role, "each.value.role") {
				for it := m.local(t, "function_buckets").ElementIterator(); it.Next(); {
					_, v := it.Element()
					for it := v.ElementIterator(); it.Next(); {
						_, rv := it.Element()
						roles = append(roles, []string{"", rv.AsString()})
					}
				}
			}
		}
		if len(roles) == 0 {
			t.Errorf("%s: cannot tell its role from %s", k, role)
		}
		for _, sm := range roles {
			ro := sm[1]
			switch {
			case ro == "roles/owner" || ro == "roles/editor" || ro == "roles/viewer":
				t.Errorf("%s grants the basic role %s", k, ro)
			case typ == "google_project_iam_member" && !slices.Contains(projectRoles, ro):
				t.Errorf("%s grants %s on the whole project; only %q may be", k, ro, projectRoles)
			case typ != "google_project_iam_member" && !slices.Contains(resourceRoles, ro):
				t.Errorf("%s grants %s, which is not among the roles in use %q", k, ro, resourceRoles)
			}
		}
		if typ == "google_project_iam_member" && strings.Contains(role, "metricWriter") {
			fe := src(t, r, "for_each")
			if fe != "toset(local.metric_writers)" {
				t.Errorf("%s grants metric writing to %s, want toset(local.metric_writers)", k, fe)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d IAM resources found", n)
	}
	if got, want := strs(t, m.local(t, "metric_writers")), controller.Actions; !slices.Equal(got, want) {
		t.Errorf("local.metric_writers = %q, want every action (functions/events counts each one's retries and dead letters)", got)
	}
	if got := strs(t, m.local(t, "project_roles")); !slices.Equal(got, projectRoles) {
		t.Errorf("local.project_roles = %q, want %q", got, projectRoles)
	}
	// The HTTP functions write no metrics: their code does not import them.
	for f, dirs := range httpCode {
		for _, d := range dirs {
			files, _ := filepath.Glob(filepath.Join(repoRoot, d, "*.go"))
			for _, p := range files {
				if strings.HasSuffix(p, "_test.go") {
					continue
				}
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(b), `"github.com/tollgate-ci/tollgate/core/metrics"`) {
					t.Errorf("%s imports core/metrics: function %s may write metrics now; add it to local.metric_writers", p, f)
				}
			}
		}
	}

	// Who may invoke what: the push account the event functions, anyone
	// the HTTP functions (they check their callers themselves).
	inv := m.resource(t, "google_cloud_run_v2_service_iam_member", "pubsub_invoker")
	if src(t, inv, "for_each") != "toset(local.actions)" || src(t, inv, "member") != `"serviceAccount:${google_service_account.pubsub_invoker.email}"` ||
		src(t, inv, "name") != "google_cloud_run_v2_service.function[each.key].name" {
		t.Error("pubsub_invoker: want run.invoker for the push account on each action's own service")
	}
	pub := m.resource(t, "google_cloud_run_v2_service_iam_member", "public")
	if src(t, pub, "for_each") != "toset(local.http_functions)" {
		t.Error("public: only the HTTP functions may be invoked by anyone")
	}
	// Each service runs as its own account.
	svc := m.resource(t, "google_cloud_run_v2_service", "function")
	if got := src(t, blocks(svc, "template")[0], "service_account"); got != "google_service_account.function[each.key].email" {
		t.Errorf("google_cloud_run_v2_service.function: service_account = %s", got)
	}
	tmpl := m.resource(t, "google_compute_instance_template", "worker")
	if sa := blocks(tmpl, "service_account"); len(sa) != 1 || src(t, sa[0], "email") != "google_service_account.worker.email" {
		t.Error("google_compute_instance_template.worker: the VMs must run as google_service_account.worker")
	}
}
