package sso

import (
	"slices"

	"github.com/arxsec/arx/arxerr"
)

// Roles maps the identity provider's groups to ARX roles.
type Roles struct {
	Claim   string   // the ID token's groups claim ("groups"); "" reads no groups
	Admin   []string // groups whose members are admins
	Manager []string // groups whose members are managers
}

// On says whether groups decide roles: a claim and at least one group
// named. Otherwise ARX's own people list does, and only people an admin
// added may sign in.
func (r Roles) On() bool { return r.Claim != "" && (len(r.Admin) > 0 || len(r.Manager) > 0) }

// Person is what ARX knows of the person an identity names (by email).
type Person struct {
	Exists   bool
	Role     string
	Disabled bool
}

// Decision is what a sign-in does: the role the person signs in with,
// whether they are added or their role changed first, or why they are
// refused (Refuse, with Why for them to read).
type Decision struct {
	Role    string
	Create  bool
	SetRole bool
	Refuse  arxerr.Code
	Why     string
}

// Decide is the sign-in rule. With groups mapped to roles, the groups
// decide at every sign-in: a person in an admin group is an admin, in a
// manager group a manager, in neither refused (leaving the groups takes
// away access), and someone ARX does not know yet is added. Without
// groups, only people an admin added sign in, with the role ARX gave
// them. A disabled person is refused either way: an ARX admin's disable
// outranks the provider.
func Decide(roles Roles, id Identity, p Person) Decision {
	if p.Disabled {
		return Decision{Refuse: arxerr.Forbidden, Why: "your ARX account is disabled; ask an ARX admin"}
	}
	if !roles.On() {
		if !p.Exists {
			return Decision{Refuse: arxerr.SSOUnknown, Why: "ARX has no person with the email " + id.Email}
		}
		return Decision{Role: p.Role}
	}
	role := roles.Of(id.Groups)
	if role == "" {
		return Decision{Refuse: arxerr.SSONoRole, Why: "your identity provider puts you in none of the groups ARX maps to a role"}
	}
	return Decision{Role: role, Create: !p.Exists, SetRole: p.Exists && p.Role != role}
}

// Of is the role of someone in groups: admin in an admin group, else
// manager in a manager group, else "" (no role).
func (r Roles) Of(groups []string) string {
	switch {
	case overlaps(groups, r.Admin):
		return "admin"
	case overlaps(groups, r.Manager):
		return "manager"
	}
	return ""
}

func overlaps(have, want []string) bool {
	for _, g := range have {
		if slices.Contains(want, g) {
			return true
		}
	}
	return false
}
