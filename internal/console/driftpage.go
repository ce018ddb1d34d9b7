package console

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
)

// DriftPageSize is how many performance events the review page shows at a
// time.
const DriftPageSize = 20

// driftGroup is one kind of performance event (a drift rule) with its
// counts, as a filter of the list.
type driftGroup struct {
	Rule     string // "" for all kinds
	Label    string
	N, Open  int
	Selected bool
	URL      string
}

// driftPager is what the review page shows of the drift list: the kinds to
// filter by, the events of one page of the chosen kind, and the links to
// the pages around it.
type driftPager struct {
	Groups           []driftGroup
	Rule             string // the kind shown; "" for all
	Page, Pages      int
	From, To, Total  int // the events shown are From to To of Total (1-based)
	Newer, Older     string
	Rows             []driftRow
	SelectedRuleName string
}

// pageDrift groups rows (newest first) by rule and cuts the chosen rule's
// events to the given page (1-based; out of range is clamped). An unknown
// rule shows all kinds. link makes the URL of a rule's page.
func pageDrift(rows []driftRow, rule string, page int, link func(rule string, page int) string) driftPager {
	byRule := map[string]*driftGroup{}
	all := driftGroup{Label: "All", URL: link("", 1)}
	for _, r := range rows {
		g := byRule[r.Rule]
		if g == nil {
			g = &driftGroup{Rule: r.Rule, Label: r.Label, URL: link(r.Rule, 1)}
			byRule[r.Rule] = g
		}
		g.N++
		all.N++
		if r.Ack == nil {
			g.Open++
			all.Open++
		}
	}
	if byRule[rule] == nil {
		rule = ""
	}
	p := driftPager{Rule: rule}
	groups := make([]driftGroup, 0, len(byRule))
	for _, g := range byRule {
		groups = append(groups, *g)
	}
	// The most frequent kind first; ties by label, so the order is stable.
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].N != groups[j].N {
			return groups[i].N > groups[j].N
		}
		return groups[i].Label < groups[j].Label
	})
	all.Selected = rule == ""
	p.Groups = append([]driftGroup{all}, groups...)
	for i := range p.Groups {
		if p.Groups[i].Rule == rule && rule != "" {
			p.Groups[i].Selected = true
			p.SelectedRuleName = p.Groups[i].Label
		}
	}
	var shown []driftRow
	for _, r := range rows {
		if rule == "" || r.Rule == rule {
			shown = append(shown, r)
		}
	}
	p.Total = len(shown)
	p.Pages = max(1, (p.Total+DriftPageSize-1)/DriftPageSize)
	p.Page = min(max(page, 1), p.Pages)
	start := (p.Page - 1) * DriftPageSize
	end := min(start+DriftPageSize, p.Total)
	p.Rows = shown[start:end]
	if p.Total > 0 {
		p.From, p.To = start+1, end
	}
	if p.Page > 1 {
		p.Newer = link(rule, p.Page-1)
	}
	if p.Page < p.Pages {
		p.Older = link(rule, p.Page+1)
	}
	return p
}

// reviewLink is the URL of a review page showing the given kind of
// performance event and page of them.
func reviewLink(agentID string, days int, rule string, page int) string {
	q := url.Values{"days": {strconv.Itoa(days)}}
	if rule != "" {
		q.Set("rule", rule)
	}
	if page > 1 {
		q.Set("page", strconv.Itoa(page))
	}
	return fmt.Sprintf("/console/agents/%s/review?%s#drift-h", url.PathEscape(agentID), q.Encode())
}
