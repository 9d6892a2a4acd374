package ui

import (
	"os"
	"strings"
	"testing"

	"github.com/tollgate-ci/tollgate/core/model"
)

// Every state has a glyph, a name and a tooltip here, and a glyph and a
// colour in the page scripts and styles, which the templates and the live
// updates use.
func TestEveryStateIsDrawn(t *testing.T) {
	js, err := os.ReadFile("../../web/static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	css, err := os.ReadFile("../../web/static/app.css")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range model.AllStates {
		i, ok := stateInfo[st]
		if !ok || i.icon == "" || i.name == "" || i.help == "" {
			t.Errorf("%s: stateInfo %+v", st, i)
		}
		if !strings.Contains(string(js), string(st)+": '"+i.icon+"'") {
			t.Errorf("%s: app.js ICONS lacks %s: '%s'", st, st, i.icon)
		}
		if st.Terminal() && !strings.Contains(string(js), string(st)+": 1") {
			t.Errorf("%s: app.js TERMINAL lacks it", st)
		}
		if !strings.Contains(string(css), ".st-"+strings.ToLower(string(st))) {
			t.Errorf("%s: app.css has no .st-%s", st, strings.ToLower(string(st)))
		}
	}
	counts := map[model.State]int{model.BotDied: 1, model.Interrupted: 2, model.NoResource: 4, model.Expired: 8, model.Failed: 16}
	if n := countInfra(counts); n != 15 {
		t.Errorf("countInfra = %d, want 15", n)
	}
}
