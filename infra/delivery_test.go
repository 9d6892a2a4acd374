package infra

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/tollgate-ci/tollgate/adapters/pubsub"
	"github.com/tollgate-ci/tollgate/core/controller"
	"github.com/tollgate-ci/tollgate/core/tasks"
)

// ffTopicPath is how functions-framework-go (v1.9, internal/events/pubsub
// ExtractTopicFromRequestPath) finds the topic of a raw push in the request
// path; without a match it logs a warning and the event has no topic.
var ffTopicPath = regexp.MustCompile(`(projects\/[^/?]+\/topics\/[^/?]+)/*`)

// TestPushEndpoints checks the push subscriptions against what the
// functions decode: a plain push envelope (no no_wrapper), to a path
// holding projects/P/topics/T of the subscription's own topic, signed for
// the service's URL.
func TestPushEndpoints(t *testing.T) {
	m := load(t)
	sub := m.resource(t, "google_pubsub_subscription", "push")
	pc := blocks(sub, "push_config")
	if len(pc) != 1 {
		t.Fatal("google_pubsub_subscription.push: want one push_config")
	}
	if len(blocks(pc[0], "no_wrapper")) != 0 {
		t.Error("google_pubsub_subscription.push: no_wrapper sends the bare data, but the functions decode the envelope's message.*")
	}
	oidc := blocks(pc[0], "oidc_token")
	if len(oidc) != 1 {
		t.Fatal("google_pubsub_subscription.push: want one oidc_token (the CloudEvent functions are private)")
	}
	if got := src(t, oidc[0], "service_account_email"); got != "google_service_account.pubsub_invoker.email" {
		t.Errorf("oidc_token.service_account_email = %s, want the invoker account", got)
	}
	project := m.ctx(t).Variables["var"].GetAttr("project").AsString()
	prefix := m.ctx(t).Variables["var"].GetAttr("prefix").AsString()
	for _, a := range controller.Actions {
		uri := "https://" + a + "-abc123-uc.a.run.app"
		extra := map[string]cty.Value{
			"each": cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(a), "value": cty.StringVal(a)}),
			"google_cloud_run_v2_service": cty.ObjectVal(map[string]cty.Value{"function": cty.MapVal(map[string]cty.Value{
				a: cty.ObjectVal(map[string]cty.Value{"uri": cty.StringVal(uri)})})}),
		}
		ep := m.attrValue(t, pc[0], "push_endpoint", extra).AsString()
		u, err := url.Parse(ep)
		if err != nil || u.Scheme+"://"+u.Host != uri {
			t.Errorf("%s: push endpoint %s is not on its service %s (%v)", a, ep, uri, err)
			continue
		}
		sm := ffTopicPath.FindStringSubmatch(u.Path)
		if want := "projects/" + project + "/topics/" + prefix + "-" + a; sm == nil || sm[1] != want {
			t.Errorf("%s: push path %q: functions-framework-go finds topic %q, want %s", a, u.Path, sm, want)
		}
		if aud := m.attrValue(t, oidc[0], "audience", extra).AsString(); aud != uri {
			t.Errorf("%s: OIDC audience %q, want the service URL %s", a, aud, uri)
		}
	}
}

// TestSchedulerMessagesDecode builds, for every scheduler job, the message
// its HTTP target publishes, delivers it as functions-framework-go hands a
// push to a function ({"message": {...}}), and checks that the function
// decodes it into a task of the job's action with valid arguments.
func TestSchedulerMessagesDecode(t *testing.T) {
	m := load(t)
	job := m.resource(t, "google_cloud_scheduler_job", "task")
	if got := src(t, job, "for_each"); got != "merge(local.schedules, local.postsubmit_schedules)" {
		t.Errorf("google_cloud_scheduler_job.task: for_each = %s", got)
	}
	ht := blocks(job, "http_target")
	if len(ht) != 1 {
		t.Fatal("google_cloud_scheduler_job.task: want one http_target (publishing through the Pub/Sub API as the scheduler's account)")
	}
	if got := src(t, ht[0], "uri"); got != `"https://pubsub.googleapis.com/v1/${google_pubsub_topic.action[each.value.action].id}:publish"` {
		t.Errorf("google_cloud_scheduler_job.task: uri = %s, want the publish method of the action's topic", got)
	}
	if got := src(t, ht[0], "http_method"); got != `"POST"` {
		t.Errorf("google_cloud_scheduler_job.task: http_method = %s", got)
	}
	ot := blocks(ht[0], "oauth_token")
	if len(ot) != 1 || src(t, ot[0], "service_account_email") != "google_service_account.scheduler.email" {
		t.Error("google_cloud_scheduler_job.task: want an oauth_token of google_service_account.scheduler")
	}
	actions := strs(t, m.local(t, "actions"))
	n := 0
	for _, l := range []string{"schedules", "postsubmit_schedules"} {
		for it := m.local(t, l).ElementIterator(); it.Next(); {
			k, v := it.Element()
			n++
			name := k.AsString()
			action := attr(v, "action").AsString()
			if !slices.Contains(actions, action) {
				t.Errorf("scheduler job %s targets %q, which has no topic", name, action)
			}
			body := m.attrValue(t, ht[0], "body", map[string]cty.Value{
				"each": cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}).AsString()
			raw, err := base64.StdEncoding.DecodeString(body)
			if err != nil {
				t.Fatalf("scheduler job %s: body is not base64: %v", name, err)
			}
			var req struct {
				Messages []struct {
					Data       string            `json:"data"`
					Attributes map[string]string `json:"attributes"`
				} `json:"messages"`
			}
			if err := json.Unmarshal(raw, &req); err != nil || len(req.Messages) != 1 {
				t.Fatalf("scheduler job %s: body %s is not one publish request message: %v", name, raw, err)
			}
			// What Pub/Sub pushes, as the function sees it.
			msg := req.Messages[0]
			ev, _ := json.Marshal(map[string]any{"message": map[string]any{
				"data": msg.Data, "attributes": msg.Attributes, "messageId": "123",
				"publishTime": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339Nano)}})
			d, err := pubsub.ParseEventData(ev)
			if err != nil {
				t.Errorf("scheduler job %s: the function cannot decode its message: %v", name, err)
				continue
			}
			if d.Task.Action != action {
				t.Errorf("scheduler job %s: decodes to action %q, want %q", name, d.Task.Action, action)
			}
			if action == controller.QueuePostsubmitJobs {
				var a controller.BranchArgs
				if err := tasks.Unmarshal(d.Task, &a); err != nil || a.Branch == "" {
					t.Errorf("scheduler job %s: arguments %s name no branch (%v)", name, d.Task.Args, err)
				}
			}
		}
	}
	if n == 0 {
		t.Error("no scheduler jobs")
	}
}
