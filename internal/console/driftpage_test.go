package console

import (
	"fmt"
	"testing"

	"github.com/arxsec/arx/internal/runtime"
)

func TestPageDrift(t *testing.T) {
	// 45 events, newest first: 30 off hours (10 acknowledged), 15 undeclared.
	var rows []driftRow
	for i := 45; i > 0; i-- {
		e := runtime.DriftEvent{Index: int64(i), Rule: "off_hours"}
		if i%3 == 0 {
			e.Rule = "undeclared_action"
		}
		if e.Rule == "off_hours" && i > 30 {
			e.Ack = &runtime.DriftAck{By: "dana@example.com"}
		}
		rows = append(rows, driftRow{DriftEvent: e, Label: driftLabel(e.Rule)})
	}
	link := func(rule string, page int) string { return fmt.Sprintf("%s/%d", rule, page) }
	for _, tc := range []struct {
		name             string
		rule             string
		page             int
		wantRule         string
		wantPage, pages  int
		from, to, total  int
		newer, older     string
		firstIdx, lastIx int64
	}{
		{"all, first page", "", 1, "", 1, 3, 1, 20, 45, "", "/2", 45, 26},
		{"all, last page", "", 3, "", 3, 3, 41, 45, 45, "/2", "", 5, 1},
		{"page past the end is the last", "", 9, "", 3, 3, 41, 45, 45, "/2", "", 5, 1},
		{"page 0 is the first", "", 0, "", 1, 3, 1, 20, 45, "", "/2", 45, 26},
		{"one kind", "undeclared_action", 1, "undeclared_action", 1, 1, 1, 15, 15, "", "", 45, 3},
		{"the other kind, page 2", "off_hours", 2, "off_hours", 2, 2, 21, 30, 30, "off_hours/1", "", 14, 1},
		{"unknown kind shows all", "<script>", 1, "", 1, 3, 1, 20, 45, "", "/2", 45, 26},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pageDrift(rows, tc.rule, tc.page, link)
			if p.Rule != tc.wantRule || p.Page != tc.wantPage || p.Pages != tc.pages || p.From != tc.from || p.To != tc.to || p.Total != tc.total ||
				p.Newer != tc.newer || p.Older != tc.older {
				t.Errorf("got rule %q page %d/%d, %d–%d of %d, newer %q older %q", p.Rule, p.Page, p.Pages, p.From, p.To, p.Total, p.Newer, p.Older)
			}
			if len(p.Rows) != tc.to-tc.from+1 || p.Rows[0].Index != tc.firstIdx || p.Rows[len(p.Rows)-1].Index != tc.lastIx {
				t.Errorf("rows %d, from #%d to #%d", len(p.Rows), p.Rows[0].Index, p.Rows[len(p.Rows)-1].Index)
			}
			for _, r := range p.Rows {
				if p.Rule != "" && r.Rule != p.Rule {
					t.Errorf("row of rule %s under %s", r.Rule, p.Rule)
				}
			}
		})
	}
	p := pageDrift(rows, "", 1, link)
	want := []driftGroup{
		{Rule: "", Label: "All", N: 45, Open: 35, Selected: true, URL: "/1"},
		{Rule: "off_hours", Label: driftLabel("off_hours"), N: 30, Open: 20, URL: "off_hours/1"},
		{Rule: "undeclared_action", Label: driftLabel("undeclared_action"), N: 15, Open: 15, URL: "undeclared_action/1"},
	}
	if fmt.Sprint(p.Groups) != fmt.Sprint(want) {
		t.Errorf("groups\n got %v\nwant %v", p.Groups, want)
	}
	if p := pageDrift(nil, "", 1, link); p.Total != 0 || p.Pages != 1 || len(p.Rows) != 0 || p.From != 0 || p.Older != "" {
		t.Errorf("no events: %+v", p)
	}
}
