package sso

import (
	"testing"

	"github.com/arxsec/arx/arxerr"
)

func TestDecide(t *testing.T) {
	groups := Roles{Claim: "groups", Admin: []string{"arx-admins"}, Manager: []string{"arx-managers", "finance-leads"}}
	none := Roles{Claim: "groups"} // a claim but no group named: ARX's own list decides
	id := func(g ...string) Identity { return Identity{Email: "ana@example.com", Subject: "s1", Groups: g} }
	for _, tc := range []struct {
		name  string
		roles Roles
		id    Identity
		p     Person
		want  Decision
	}{
		{"no groups: a known manager signs in as a manager", none, id(), Person{Exists: true, Role: "manager"}, Decision{Role: "manager"}},
		{"no groups: a known admin stays admin whatever groups say", Roles{}, id("arx-admins"), Person{Exists: true, Role: "admin"}, Decision{Role: "admin"}},
		{"no groups: an unknown person is refused", Roles{}, id(), Person{}, Decision{Refuse: arxerr.SSOUnknown, Why: "ARX has no person with the email ana@example.com"}},
		{"groups: a new admin is added", groups, id("arx-admins"), Person{}, Decision{Role: "admin", Create: true}},
		{"groups: a new manager is added", groups, id("finance-leads", "other"), Person{}, Decision{Role: "manager", Create: true}},
		{"groups: admin wins over manager", groups, id("arx-managers", "arx-admins"), Person{}, Decision{Role: "admin", Create: true}},
		{"groups: a known manager made admin", groups, id("arx-admins"), Person{Exists: true, Role: "manager"}, Decision{Role: "admin", SetRole: true}},
		{"groups: a known admin made manager", groups, id("arx-managers"), Person{Exists: true, Role: "admin"}, Decision{Role: "manager", SetRole: true}},
		{"groups: same role, nothing changes", groups, id("arx-managers"), Person{Exists: true, Role: "manager"}, Decision{Role: "manager"}},
		{"groups: in no mapped group, refused", groups, id("everyone"), Person{Exists: true, Role: "admin"},
			Decision{Refuse: arxerr.SSONoRole, Why: "your identity provider puts you in none of the groups ARX maps to a role"}},
		{"groups: no groups claim at all, refused", groups, id(), Person{},
			Decision{Refuse: arxerr.SSONoRole, Why: "your identity provider puts you in none of the groups ARX maps to a role"}},
		{"groups: names are compared exactly", groups, id("ARX-ADMINS"), Person{},
			Decision{Refuse: arxerr.SSONoRole, Why: "your identity provider puts you in none of the groups ARX maps to a role"}},
		{"disabled: refused even in an admin group", groups, id("arx-admins"), Person{Exists: true, Role: "admin", Disabled: true},
			Decision{Refuse: arxerr.Forbidden, Why: "your ARX account is disabled; ask an ARX admin"}},
		{"disabled: refused without groups", Roles{}, id(), Person{Exists: true, Role: "manager", Disabled: true},
			Decision{Refuse: arxerr.Forbidden, Why: "your ARX account is disabled; ask an ARX admin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.roles, tc.id, tc.p); got != tc.want {
				t.Errorf("Decide = %+v, want %+v", got, tc.want)
			}
		})
	}
}
