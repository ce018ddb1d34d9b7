package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/arxsec/arx/internal/arxtest"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/server"
	"github.com/arxsec/arx/record"
)

const scimToken = "scim-token-0123456789abcdef0123456789abcdef"

// scimServer is a server that takes SCIM, whose sign-in maps the groups
// arx-admins and finance-leads to roles (the provider is never reached).
func scimServer(t *testing.T) *arxtest.Server {
	return arxtest.StartWith(t, t.TempDir(), func(c *server.Config) {
		c.SSO = server.SSOConfig{Issuer: "https://idp.invalid/", ClientID: "arx", ClientSecret: []byte("s3cret"), GroupsClaim: "groups",
			AdminGroups: []string{"arx-admins"}, ManagerGroups: []string{"finance-leads"}}
		c.SCIMToken = []byte(scimToken)
	})
}

type scimAnswer struct {
	status int
	body   map[string]any
	raw    string
}

// scimDo sends what a provisioning client sends: application/scim+json,
// the bearer token.
func scimDo(t *testing.T, s *arxtest.Server, method, path string, body any) scimAnswer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.URL+"/scim/v2"+path, rd)
	req.Header.Set("Content-Type", "application/scim+json")
	req.Header.Set("Authorization", "Bearer "+scimToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := scimAnswer{status: resp.StatusCode, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return a
}

func (a scimAnswer) want(t *testing.T, what string, status int) scimAnswer {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: HTTP %d, want %d: %s", what, a.status, status, a.raw)
	}
	return a
}

func filterPath(path, f string) string { return path + "?filter=" + url.QueryEscape(f) }

func roleOf(t *testing.T, s *arxtest.Server, email string) (role string, disabled bool) {
	t.Helper()
	u, err := s.Runtime.Store().UserByEmail(t.Context(), email)
	if err != nil {
		t.Fatalf("%s: %v", email, err)
	}
	return u.Role, u.DisabledAt != nil
}

// TestSCIMOkta replays what Okta's provisioning sends (Okta's SCIM 2.0
// guide: a userName filter before create, POST with a password ARX never
// keeps, group push with add and remove by value filter, deactivation as
// a PATCH without a path), and checks its effects on ARX: roles follow the
// mapped groups; a deactivated approver's token dies at once and their
// grant toward a quorum stops counting.
func TestSCIMOkta(t *testing.T) {
	s := scimServer(t)
	if r := s.Do("GET", "/scim/v2/Users", "", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("SCIM without a token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/scim/v2/Users", "arxk_not-the-scim-token", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("SCIM with another token: %d %s", r.Status, r.Body)
	}
	if r := s.Do("GET", "/scim/v2/Users", s.AdminToken, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("SCIM with the operator's token: %d %s", r.Status, r.Body)
	}

	found := scimDo(t, s, "GET", filterPath("/Users", `userName eq "ana@example.com"`)+"&startIndex=1&count=100", nil).want(t, "lookup", 200)
	if found.body["totalResults"] != float64(0) {
		t.Fatalf("lookup before create: %s", found.raw)
	}
	create := func(email, given string) string {
		t.Helper()
		a := scimDo(t, s, "POST", "/Users", map[string]any{
			"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
			"userName": email, "name": map[string]any{"givenName": given, "familyName": "Example"},
			"emails":      []any{map[string]any{"primary": true, "value": email, "type": "work"}},
			"displayName": given + " Example", "locale": "en-US", "externalId": "00u" + given, "groups": []any{},
			"password": "1mz050nq-" + given, "active": true,
		}).want(t, "create "+email, 201)
		if a.body["userName"] != email || a.body["active"] != true {
			t.Fatalf("created: %s", a.raw)
		}
		return a.body["id"].(string)
	}
	ana, bob := create("ana@example.com", "Ana"), create("bob@example.com", "Bob")
	create("cleo@example.com", "Cleo")
	scimDo(t, s, "POST", "/Users", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "ana@example.com"}).
		want(t, "create a person twice", 409)
	got := scimDo(t, s, "GET", "/Users/"+ana, nil).want(t, "get", 200)
	if got.body["id"] != ana || got.body["userName"] != "ana@example.com" || strings.Contains(got.raw, "1mz050nq") {
		t.Errorf("get: %s", got.raw)
	}
	if u, _ := s.Runtime.Store().UserByEmail(t.Context(), "ana@example.com"); u.PasswordHash != "" {
		t.Error("the password Okta sent was kept")
	}
	if role, _ := roleOf(t, s, "ana@example.com"); role != "manager" {
		t.Errorf("a provisioned person is %s, want manager", role)
	}

	// Group push: the admin group, members added, then one removed.
	g := scimDo(t, s, "POST", "/Groups", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"},
		"displayName": "arx-admins", "members": []any{}}).want(t, "create group", 201)
	gid := g.body["id"].(string)
	scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "add", "path": "members", "value": []any{
			map[string]any{"value": ana, "display": "ana@example.com"}, map[string]any{"value": bob, "display": "bob@example.com"}}}}}).
		want(t, "add members", 200)
	if role, _ := roleOf(t, s, "ana@example.com"); role != "admin" {
		t.Errorf("in arx-admins, ana is %s", role)
	}
	scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "remove", "path": fmt.Sprintf(`members[value eq "%s"]`, bob)}}}).want(t, "remove a member", 200)
	if role, _ := roleOf(t, s, "bob@example.com"); role != "manager" {
		t.Errorf("out of arx-admins, bob is %s, want manager", role)
	}
	listed := scimDo(t, s, "GET", "/Groups/"+gid, nil).want(t, "get group", 200)
	if members, _ := listed.body["members"].([]any); len(members) != 1 || !strings.Contains(listed.raw, "ana@example.com") {
		t.Errorf("group: %s", listed.raw)
	}
	scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": "no-such-person"}}}}}).
		want(t, "an unknown member", 404)

	// Ana, Bob and Cleo approve for an agent that needs two of them.
	m := strings.Replace(arxtest.Manifest, "  approvers: [boss@example.com]\n", "  approvers: [ana@example.com, bob@example.com, cleo@example.com]\n  quorum: 2\n", 1)
	_, agentToken := s.Hire(m)
	tokenOf := func(email string) string {
		u, err := s.Runtime.Store().UserByEmail(t.Context(), email)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.Runtime.IssueUserToken(t.Context(), u, "test")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	anaTok, bobTok, cleoTok := tokenOf("ana@example.com"), tokenOf("bob@example.com"), tokenOf("cleo@example.com")
	r := request(s, agentToken, "crm", "account.delete", "high", "q1")
	var c callJSON
	r.JSON(t, &c)
	if r := s.Do("POST", "/v1/approvals/"+c.ID+"/approve", anaTok, map[string]string{"reason": "fine"}); r.Status != http.StatusOK {
		t.Fatalf("ana grants: %d %s", r.Status, r.Body)
	}

	// Okta deactivates Ana.
	off := scimDo(t, s, "PATCH", "/Users/"+ana, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "value": map[string]any{"active": false}}}}).want(t, "deactivate", 200)
	if off.body["active"] != false {
		t.Errorf("deactivated: %s", off.raw)
	}
	if r := s.Do("GET", "/v1/auth/tokens", anaTok, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("a deactivated person's token: %d %s", r.Status, r.Body)
	}
	var a struct {
		Status string   `json:"status"`
		Grants []string `json:"grants"`
	}
	s.Do("GET", "/v1/approvals/"+c.ID, s.AdminToken, nil).JSON(t, &a)
	if a.Status != "pending" || len(a.Grants) != 0 {
		t.Fatalf("after ana's deactivation the approval is %+v, want pending without her grant", a)
	}
	a.Grants = nil
	s.Do("POST", "/v1/approvals/"+c.ID+"/approve", bobTok, map[string]string{"reason": "ok"}).JSON(t, &a)
	if a.Status != "pending" || len(a.Grants) != 1 {
		t.Fatalf("bob's grant after ana's was voided: %+v", a)
	}
	a.Grants = nil
	s.Do("POST", "/v1/approvals/"+c.ID+"/approve", cleoTok, map[string]string{"reason": "ok"}).JSON(t, &a)
	if a.Status != "granted" {
		t.Fatalf("cleo's grant makes two: %+v", a)
	}
	if _, disabled := roleOf(t, s, "ana@example.com"); !disabled {
		t.Error("ana is not disabled")
	}
	// Okta's routine push cannot enable her again: an ARX admin does.
	scimDo(t, s, "PUT", "/Users/"+ana, map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": "ana@example.com"}).want(t, "a PUT without active", 200)
	scimDo(t, s, "PUT", "/Users/"+ana, map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": "ana@example.com", "active": true}).want(t, "reactivate through SCIM", 400)
	if _, disabled := roleOf(t, s, "ana@example.com"); !disabled {
		t.Error("SCIM enabled a disabled person")
	}
	if r := s.Do("POST", "/v1/users/ana@example.com/enable", s.AdminToken, nil); r.Status != http.StatusOK {
		t.Fatalf("an admin enables ana: %d %s", r.Status, r.Body)
	}

	kinds := map[string]int{}
	entries, err := s.Runtime.Store().Entries(t.Context(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, se := range entries {
		if bytes.Contains(se.Data, []byte("1mz050nq")) || bytes.Contains(se.Data, []byte(scimToken)) {
			t.Errorf("entry %d holds a secret: %s", se.Index, se.Data)
		}
		e, err := record.Parse(se.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Actor == "scim" {
			kinds[e.Type]++
		}
	}
	for typ, n := range map[string]int{record.TypeUserAdded: 3, runtime.TypeGroupSet: 3, record.TypeUserRoleChanged: 3,
		record.TypeUserDisabled: 1, record.TypeUserEnabled: 0, record.TypeApprovalGrantVoided: 1} {
		if kinds[typ] != n {
			t.Errorf("%d %s entries by scim, want %d (all: %v)", kinds[typ], typ, n, kinds)
		}
	}
}

// TestSCIMEntra replays what Microsoft Entra ID's provisioning sends (its
// SCIM validator's requests: a userName that is not an email, the
// enterprise extension, capitalised operations, "False" as a string, a
// userName change, group patches by value lists, DELETE).
func TestSCIMEntra(t *testing.T) {
	s := scimServer(t)
	scimDo(t, s, "GET", filterPath("/Users", `userName eq "Test_User_ab6490ee"`), nil).want(t, "lookup", 200)
	created := scimDo(t, s, "POST", "/Users", map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"},
		"externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", "userName": "Test_User_ab6490ee", "active": true,
		"emails": []any{map[string]any{"primary": true, "type": "work", "value": "dev.lead@contoso.com"}},
		"meta":   map[string]any{"resourceType": "User"},
		"name":   map[string]any{"formatted": "Dev Lead", "familyName": "Lead", "givenName": "Dev"}, "roles": []any{},
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": map[string]any{"department": "Finance"},
	}).want(t, "create", 201)
	id := created.body["id"].(string)
	if created.body["userName"] != "dev.lead@contoso.com" {
		t.Errorf("a userName that is not an email: the person is %v, want the primary email", created.body["userName"])
	}
	byName := scimDo(t, s, "GET", filterPath("/Users", `userName eq "dev.lead@contoso.com"`), nil).want(t, "lookup by email", 200)
	if byName.body["totalResults"] != float64(1) {
		t.Errorf("lookup after create: %s", byName.raw)
	}
	scimDo(t, s, "PATCH", "/Users/"+id, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "Replace", "path": "userName", "value": "someone.else@contoso.com"}}}).
		want(t, "a userName change", 400)
	scimDo(t, s, "PATCH", "/Users/"+id, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{
			map[string]any{"op": "Replace", "path": "name.familyName", "value": "Leader"},
			map[string]any{"op": "Replace", "path": "active", "value": "False"},
		}}).want(t, "deactivate", 200)
	if _, disabled := roleOf(t, s, "dev.lead@contoso.com"); !disabled {
		t.Error("not disabled after active False")
	}
	scimDo(t, s, "PATCH", "/Users/"+id, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "Replace", "path": "active", "value": "True"}}}).want(t, "activate through SCIM", 400)
	if r := s.Do("POST", "/v1/users/dev.lead@contoso.com/enable", s.AdminToken, nil); r.Status != http.StatusOK {
		t.Fatalf("an admin enables the person: %d %s", r.Status, r.Body)
	}

	g := scimDo(t, s, "POST", "/Groups", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"},
		"externalId": "60f1bb27", "displayName": "Finance Leads (old name)", "meta": map[string]any{"resourceType": "Group"}}).want(t, "create group", 201)
	gid := g.body["id"].(string)
	if g.body["externalId"] != "60f1bb27" {
		t.Errorf("group: %s", g.raw)
	}
	scimDo(t, s, "GET", filterPath("/Groups", `displayName eq "Finance Leads (old name)"`)+"&excludedAttributes=members", nil).want(t, "group lookup", 200)
	scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{
			map[string]any{"op": "Replace", "path": "displayName", "value": "arx-admins"},
			map[string]any{"op": "Add", "path": "members", "value": []any{map[string]any{"$ref": nil, "value": id}}},
		}}).want(t, "rename and add", 200)
	if role, _ := roleOf(t, s, "dev.lead@contoso.com"); role != "admin" {
		t.Errorf("renamed into arx-admins with a member: %s", role)
	}
	scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "Remove", "path": "members", "value": []any{map[string]any{"$ref": nil, "value": id}}}}}).
		want(t, "remove", 200)
	if role, _ := roleOf(t, s, "dev.lead@contoso.com"); role != "manager" {
		t.Errorf("removed from arx-admins: %s", role)
	}
	scimDo(t, s, "DELETE", "/Groups/"+gid, nil).want(t, "delete group", 204)
	scimDo(t, s, "GET", "/Groups/"+gid, nil).want(t, "get a deleted group", 404)
	scimDo(t, s, "DELETE", "/Users/"+id, nil).want(t, "delete user", 204)
	if _, disabled := roleOf(t, s, "dev.lead@contoso.com"); !disabled {
		t.Error("a deleted person is not disabled")
	}
	scimDo(t, s, "GET", "/Users/no-such-id", nil).want(t, "an unknown person", 404)
	spc := scimDo(t, s, "GET", "/ServiceProviderConfig", nil).want(t, "service provider config", 200)
	if !strings.Contains(spc.raw, "oauthbearertoken") {
		t.Errorf("service provider config: %s", spc.raw)
	}
}

// TestSCIMGroupRaces: changes to one group sent at the same time all
// land (each applies to the group as the one before it left it), and a
// bad patch is a SCIM 400 that leaves the server ready.
func TestSCIMGroupRaces(t *testing.T) {
	s := scimServer(t)
	var ids []string
	for i := range 8 {
		a := scimDo(t, s, "POST", "/Users", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"},
			"userName": fmt.Sprintf("p%d@example.com", i)}).want(t, "create", 201)
		ids = append(ids, a.body["id"].(string))
	}
	g := scimDo(t, s, "POST", "/Groups", map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"},
		"displayName": "arx-admins", "members": []any{map[string]any{"value": ids[0]}}}).want(t, "create group", 201)
	gid := g.body["id"].(string)
	done := make(chan scimAnswer, len(ids))
	for _, id := range ids[1:] {
		go func() {
			done <- scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
				"Operations": []any{map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": id}}}}})
		}()
	}
	go func() {
		done <- scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
			"Operations": []any{map[string]any{"op": "remove", "path": fmt.Sprintf(`members[value eq "%s"]`, ids[0])}}})
	}()
	for range ids {
		if a := <-done; a.status != 200 {
			t.Errorf("a concurrent change: %d %s", a.status, a.raw)
		}
	}
	got := scimDo(t, s, "GET", "/Groups/"+gid, nil).want(t, "get", 200)
	if members, _ := got.body["members"].([]any); len(members) != len(ids)-1 || strings.Contains(got.raw, ids[0]) {
		t.Errorf("after 7 adds and a removal at once: %s", got.raw)
	}
	if role, _ := roleOf(t, s, "p0@example.com"); role != "manager" {
		t.Errorf("removed from the admin group at the same time as others were added: %s", role)
	}
	scimDo(t, s, "PATCH", "/Groups/"+gid, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "path": "displayName", "value": 7}}}).want(t, "a bad value", 400)
	if r := s.Do("GET", "/readyz", "", nil); r.Status != http.StatusOK {
		t.Errorf("ready after a refused patch: %d %s", r.Status, r.Body)
	}
}
