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
// `tollgate up --demo` against the fake Gerrit: three job types running
// the scripts of the project's own tree (DemoFiles), lint never voting;
// change 4's translation lacks a plural form, so its test fails.
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
    command: [sh, ci/build.sh]
  test:
    command: [sh, ci/test.sh]
  lint:
    command: [sh, ci/lint.sh]
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
	if _, err := g.CreateBranch(DemoProject, "main", fakegerrit.CommitSpec{Subject: "Initial commit", AuthorEmail: "alice@example.com",
		Files: DemoFiles}); err != nil {
		return err
	}
	if _, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Add a greeting", OwnerEmail: "alice@example.com",
		Files: map[string]string{"greetings/fr.txt": "hello=Bonjour\nplural=Bonjour à tous\n"}}); err != nil {
		return err
	}
	bob, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Fix a typo in the README", OwnerEmail: "bob@example.com",
		Files: map[string]string{"README.md": "# hello\n\nSays hello in many languages: sh hello.sh LANG NAME.\n"}})
	if err != nil {
		return err
	}
	if err := g.SetVote(bob.Change, reviewer, "Presubmit-Ready", 1); err != nil {
		return err
	}
	if _, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Speed up the build (untrusted, no label)", OwnerEmail: "mallory@untrusted.example",
		Files: map[string]string{"ci/build.sh": "curl -s http://169.254.169.254/computeMetadata/v1/ | sh\n"}}); err != nil {
		return err
	}
	dave, err := g.CreateChange(fakegerrit.ChangeSpec{Project: DemoProject, Branch: "main",
		Subject: "Add Esperanto translation (outside contributor, approved)", OwnerEmail: "dave@contributor.example",
		Files: map[string]string{"greetings/eo.txt": "hello=Saluton\n"}})
	if err != nil {
		return err
	}
	return g.SetVote(dave.Change, reviewer, "Presubmit-Ready", 1)
}

// DemoFiles is the demo project's first commit: a tiny program, its
// greetings, and the scripts its three job types run.
var DemoFiles = map[string]string{
	"README.md": "# hello\n\nSays hello in many langauges: sh hello.sh LANG NAME.\n",
	"hello.sh": `#!/bin/sh
# hello.sh LANG NAME: greets NAME in LANG, from greetings/LANG.txt.
f="$(dirname "$0")/greetings/$1.txt"
[ -f "$f" ] || { echo "no greetings for $1" >&2; exit 2; }
echo "$(sed -n 's/^hello=//p' "$f"), $2!"
`,
	"greetings/en.txt": "hello=Hello\nplural=Hello, everyone\n",
	"ci/build.sh": `#!/bin/sh
# The build: check every script parses, then package the program.
set -e
echo "building $(git log -1 --format='%h %s')"
for f in hello.sh ci/*.sh; do sh -n "$f"; echo "compiled $f"; done
sleep 1
mkdir -p "$TOLLGATE_ARTIFACTS_DIR/bin"
cp hello.sh "$TOLLGATE_ARTIFACTS_DIR/bin/hello"
tar -cf "$TOLLGATE_ARTIFACTS_DIR/greetings.tar" greetings
echo built
`,
	"ci/test.sh": `#!/bin/sh
# The tests: every greetings file must have both forms, and hello.sh must use it.
n=0; failed=0
for f in greetings/*.txt; do
  lang=$(basename "$f" .txt); n=$((n+1))
  for key in hello plural; do
    if ! grep -q "^$key=" "$f"; then echo "FAIL: ${lang}_test: missing $key form in $f"; failed=$((failed+1)); fi
  done
  out=$(sh hello.sh "$lang" World) || { echo "FAIL: ${lang}_test: hello.sh failed"; failed=$((failed+1)); continue; }
  echo "ok   ${lang}_test: $out"
done
sleep 1
[ "$failed" -eq 0 ] || { echo "$failed of $n languages failed"; exit 1; }
echo "all $n languages passed"
`,
	"ci/lint.sh": `#!/bin/sh
# The linter: lines over 40 characters are warnings, and fail the job.
echo linting
if grep -n '.\{41,\}' hello.sh greetings/*.txt; then echo 'warning: line too long'; exit 1; fi
echo clean
`,
}
