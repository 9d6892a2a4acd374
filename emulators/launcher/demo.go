package launcher

import (
	fakegerrit "github.com/tollgate-ci/tollgate/emulators/gerrit"
)

// Placeholders replaced in the config file (Options.Config, or the demo
// config) before the children read it, since ports may be random.
const (
	PlaceholderGerritURL = "${GERRIT_URL}" // the fake Gerrit's base URL
	PlaceholderAPIURL    = "${API_URL}"    // the api function's URL
)

// Environment variables the demo config names for the Gerrit credentials.
// The launcher sets a config's gerrit.user_env and gerrit.password_env for
// the children whenever its gerrit.url is the fake Gerrit.
const (
	DemoUserEnv     = "TOLLGATE_EMULATORS_GERRIT_USER"
	DemoPasswordEnv = "TOLLGATE_EMULATORS_GERRIT_PASSWORD"
)

// DemoProject is the Gerrit project of DemoSeed and DemoConfig.
const DemoProject = "demo/hello"

// DemoConfig is the config used without Options.Config: the demo of
// `tollgate up --demo` (three job types, lint never voting, change 4's
// test failing) against the fake Gerrit.
const DemoConfig = `# tollgate emulators up: the demo config
gerrit:
  url: ${GERRIT_URL}
  project: demo/hello
  branches: [main]
  user_env: TOLLGATE_EMULATORS_GERRIT_USER
  password_env: TOLLGATE_EMULATORS_GERRIT_PASSWORD
  poll_interval: 5s
  full_reconcile_interval: 10m
trust:
  trusted_emails: '.*@example\.com'
  ready_label: Presubmit-Ready
vote:
  enabled: true
  label: Code-Review
  ui_url: ${API_URL}
jobs:
  build:
    command: [sh, -c, "echo building change $TOLLGATE_CHANGE patchset $TOLLGATE_PATCHSET; sleep 1; mkdir -p $TOLLGATE_ARTIFACTS_DIR/bin; echo binary > $TOLLGATE_ARTIFACTS_DIR/bin/hello; echo built"]
  test:
    command: [sh, -c, "echo running 3 tests; sleep 1; if [ \"$TOLLGATE_CHANGE\" = 4 ]; then echo 'FAIL: translation_test: missing plural forms'; exit 1; fi; echo 'all 3 tests passed'"]
  lint:
    command: [sh, -c, "echo linting; sleep 1; echo 'warning: line too long'; exit 1"]
    skip_voting: true
timeouts: {job: 10m, cl: 1h, worker_death: 1m}
logs_ttl: 7d
postsubmit: {interval: 10m}
tasks: {max_attempts: 5}
# Anyone may read; the local user of tollgate up --demo may do everything.
ui: {users: ["*"], admins: [local@localhost]}
`

// DemoSeed creates the demo's project and changes on g, as `tollgate up
// --demo` does: the branch main; alice's change 1 (trusted); bob's change
// 2 (trusted, Presubmit-Ready approved by carol: a vote); mallory's change
// 3 (untrusted: no jobs); dave's change 4 (untrusted, approved by carol:
// jobs and a vote).
func DemoSeed(g *fakegerrit.Server) error {
	const reviewer = "carol@example.com"
	if _, err := g.CreateBranch(DemoProject, "main", fakegerrit.CommitSpec{Subject: "Initial commit", AuthorEmail: "alice@example.com"}); err != nil {
		return err
	}
	if _, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Add a greeting", OwnerEmail: "alice@example.com"}); err != nil {
		return err
	}
	bob, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Fix a typo in the README", OwnerEmail: "bob@example.com"})
	if err != nil {
		return err
	}
	if err := g.SetVote(bob.Change, reviewer, "Presubmit-Ready", 1); err != nil {
		return err
	}
	if _, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Speed up the build (untrusted, no label)", OwnerEmail: "mallory@untrusted.example"}); err != nil {
		return err
	}
	dave, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Add Esperanto translation (outside contributor, approved)", OwnerEmail: "dave@contributor.example"})
	if err != nil {
		return err
	}
	return g.SetVote(dave.Change, reviewer, "Presubmit-Ready", 1)
}
