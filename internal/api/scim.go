package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"slices"
	"strings"

	"github.com/elimity-com/scim"
	scimerr "github.com/elimity-com/scim/errors"
	"github.com/elimity-com/scim/optional"
	"github.com/elimity-com/scim/schema"
	"github.com/google/uuid"
	filter "github.com/scim2/filter-parser/v2"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
	"github.com/arxsec/arx/internal/store"
)

// SCIM 2.0 (RFC 7643, 7644) at /scim/v2/, for the identity provider's
// provisioning client (Okta, Entra ID, ...), with the bearer token the
// server was given (--scim-token-file). github.com/elimity-com/scim parses
// and validates the requests (schemas, filters, patch operations); the
// handlers below map them onto ARX's people and groups, through the
// runtime, which records every change. A person's email is who they are
// in job descriptions, so it does not change through SCIM; deleting a
// person disables them (the record keeps naming them).

// MaxSCIMBody bounds a SCIM request's body (a group with many members).
const MaxSCIMBody = 4 << 20

func (s *server) scimHandler() http.Handler {
	srv, err := scim.NewServer(&scim.ServerArgs{
		ServiceProviderConfig: &scim.ServiceProviderConfig{SupportFiltering: true, SupportPatch: true, MaxResults: 200,
			AuthenticationSchemes: []scim.AuthenticationScheme{{Type: scim.AuthenticationTypeOauthBearerToken, Name: "Bearer token",
				Description: "the token given to arx serve --scim-token-file"}}},
		ResourceTypes: []scim.ResourceType{
			{ID: optional.NewString("User"), Name: "User", Endpoint: "/Users", Description: optional.NewString("People: managers and admins"),
				Schema: schema.CoreUserSchema(), SchemaExtensions: []scim.SchemaExtension{{Schema: schema.ExtensionEnterpriseUser()}},
				Handler: scimUsers{s.rt}},
			{ID: optional.NewString("Group"), Name: "Group", Endpoint: "/Groups", Description: optional.NewString("Groups, mapped to roles"),
				Schema: schema.CoreGroupSchema(), Handler: scimGroups{s.rt}},
		},
	})
	if err != nil {
		panic(fmt.Sprintf("api: scim server: %v", err)) // a build defect: the arguments are constants
	}
	h := http.StripPrefix("/scim", srv)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.rt.SCIMOn() {
			writeSCIMError(w, scimerr.ScimError{Status: http.StatusNotFound, Detail: "SCIM is off: start arx serve with --scim-token-file"})
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !s.rt.SCIMAuthorized(tok) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="arx scim"`)
			writeSCIMError(w, scimerr.ScimError{Status: http.StatusUnauthorized, Detail: "missing or wrong bearer token"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxSCIMBody)
		if r.Method == http.MethodPatch {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				writeSCIMError(w, scimerr.ScimError{Status: http.StatusRequestEntityTooLarge, Detail: "the request is too large"})
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(booleanActive(body)))
		}
		h.ServeHTTP(w, r)
	})
}

// booleanActive rewrites, in a PATCH body, an active value sent as the
// string "True" or "False" (as Entra ID does, unless its aadOptscim062020
// flag is set) to the boolean the schema says; anything else is left as
// it came, for the library to validate.
func booleanActive(body []byte) []byte {
	var req map[string]any
	if json.Unmarshal(body, &req) != nil {
		return body
	}
	ops, _ := req["Operations"].([]any)
	changed := false
	fix := func(v any) (any, bool) {
		if s, ok := v.(string); ok {
			if b, ok := activeOf(s); ok {
				return b, true
			}
		}
		return v, false
	}
	for _, o := range ops {
		op, _ := o.(map[string]any)
		if op == nil {
			continue
		}
		if path, _ := op["path"].(string); strings.EqualFold(path, "active") {
			if v, ok := fix(op["value"]); ok {
				op["value"], changed = v, true
			}
		}
		if m, ok := op["value"].(map[string]any); ok && op["path"] == nil {
			for k, v := range m {
				if strings.EqualFold(k, "active") {
					if b, ok := fix(v); ok {
						m[k], changed = b, true
					}
				}
			}
		}
	}
	if !changed {
		return body
	}
	out, err := json.Marshal(req)
	if err != nil {
		return body
	}
	return out
}

func writeSCIMError(w http.ResponseWriter, e scimerr.ScimError) {
	w.Header().Set("Content-Type", "application/scim+json")
	w.WriteHeader(e.Status)
	b, _ := e.MarshalJSON()
	w.Write(b)
}

// scimError turns the runtime's errors into SCIM's; what is not the
// client's fault says only that it failed (the server's log has more).
func scimError(err error) error {
	var ae *arxerr.Error
	if !errors.As(err, &ae) {
		return scimerr.ScimErrorInternal
	}
	switch ae.Code {
	case arxerr.UserExists, arxerr.Conflict:
		return scimerr.ScimError{ScimType: scimerr.ScimTypeUniqueness, Detail: ae.Message, Status: http.StatusConflict}
	case arxerr.UserNotFound, arxerr.NotFound:
		return scimerr.ScimError{Detail: ae.Message, Status: http.StatusNotFound}
	case arxerr.BadRequest:
		return scimerr.ScimErrorBadRequest(ae.Message)
	}
	return scimerr.ScimErrorInternal
}

func mutability(what string) error {
	return scimerr.ScimError{ScimType: scimerr.ScimTypeMutability, Status: http.StatusBadRequest,
		Detail: what + " cannot change: a person's email is who they are in job descriptions; add a new person instead"}
}

type scimUsers struct{ rt *runtime.Runtime }

func userResource(u *store.User) scim.Resource {
	created := u.CreatedAt
	return scim.Resource{ID: u.ID, Meta: scim.Meta{Created: &created}, Attributes: scim.ResourceAttributes{
		"userName":    u.Email,
		"displayName": u.Email,
		"active":      u.DisabledAt == nil,
		"emails":      []any{map[string]any{"value": u.Email, "primary": true, "type": "work"}},
		"roles":       []any{map[string]any{"value": u.Role, "primary": true}},
	}}
}

// emailOf is the person's email in a user's attributes: userName when it
// is an email, else the primary (or first) of emails.
func emailOf(a scim.ResourceAttributes) (string, bool) {
	if name, _ := a["userName"].(string); name != "" {
		if _, err := mail.ParseAddress(name); err == nil && strings.Contains(name, "@") {
			return name, true
		}
	}
	emails, _ := a["emails"].([]any)
	first := ""
	for _, e := range emails {
		m, _ := e.(map[string]any)
		v, _ := m["value"].(string)
		if v == "" {
			continue
		}
		if p, _ := m["primary"].(bool); p {
			return v, true
		}
		if first == "" {
			first = v
		}
	}
	return first, first != ""
}

// activeOf reads active as a boolean, or as the string Entra ID sends
// ("True", "False").
func activeOf(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		switch strings.ToLower(x) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
	}
	return false, false
}

func (h scimUsers) Create(r *http.Request, a scim.ResourceAttributes) (scim.Resource, error) {
	email, ok := emailOf(a)
	if !ok {
		return scim.Resource{}, scimerr.ScimErrorBadRequest("a person needs an email: as userName, or in emails")
	}
	active := true
	if v, present := a["active"]; present {
		if active, ok = activeOf(v); !ok {
			return scim.Resource{}, scimerr.ScimErrorBadRequest("active is not a boolean")
		}
	}
	u, err := h.rt.SCIMCreateUser(r.Context(), email, active)
	if err != nil {
		return scim.Resource{}, scimError(err)
	}
	return userResource(u), nil
}

func (h scimUsers) user(r *http.Request, id string) (*store.User, error) {
	u, err := h.rt.Store().User(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, scimerr.ScimErrorResourceNotFound(id)
	}
	if err != nil {
		return nil, scimError(h.rt.ReadFailed("scim user", err))
	}
	return u, nil
}

func (h scimUsers) Get(r *http.Request, id string) (scim.Resource, error) {
	u, err := h.user(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	return userResource(u), nil
}

func (h scimUsers) GetAll(r *http.Request, p scim.ListRequestParams) (scim.Page, error) {
	users, err := h.rt.Store().Users(r.Context())
	if err != nil {
		return scim.Page{}, scimError(h.rt.ReadFailed("scim users", err))
	}
	res := make([]scim.Resource, 0, len(users))
	for i := range users {
		res = append(res, userResource(&users[i]))
	}
	return page(res, p), nil
}

// page filters resources and cuts the page asked for.
func page(all []scim.Resource, p scim.ListRequestParams) scim.Page {
	var kept []scim.Resource
	for _, res := range all {
		if p.FilterValidator != nil {
			attrs := scim.ResourceAttributes{"id": res.ID}
			for k, v := range res.Attributes {
				attrs[k] = v
			}
			if p.FilterValidator.PassesFilter(attrs) != nil {
				continue
			}
		}
		kept = append(kept, res)
	}
	out := scim.Page{TotalResults: len(kept), Resources: []scim.Resource{}}
	start := max(p.StartIndex, 1) - 1
	if start < len(kept) && p.Count > 0 {
		out.Resources = kept[start:min(len(kept), start+p.Count)]
	}
	return out
}

func (h scimUsers) Replace(r *http.Request, id string, a scim.ResourceAttributes) (scim.Resource, error) {
	u, err := h.user(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	if email, ok := emailOf(a); ok && !strings.EqualFold(email, u.Email) {
		return scim.Resource{}, mutability("userName")
	}
	active := u.DisabledAt == nil // a PUT without active leaves it as it is
	if v, present := a["active"]; present {
		var ok bool
		if active, ok = activeOf(v); !ok {
			return scim.Resource{}, scimerr.ScimErrorBadRequest("active is not a boolean")
		}
	}
	return h.setActive(r, u, active)
}

// setActive disables a person, or leaves them as they are. SCIM never
// enables a disabled person: whoever disabled them (an ARX admin during an
// incident, or the provider), enabling is an ARX admin's act (`arx users
// enable`), so a provider's routine push cannot undo an admin's disable.
func (h scimUsers) setActive(r *http.Request, u *store.User, active bool) (scim.Resource, error) {
	if (u.DisabledAt == nil) == active {
		return userResource(u), nil
	}
	if active {
		return scim.Resource{}, scimerr.ScimError{ScimType: scimerr.ScimTypeMutability, Status: http.StatusBadRequest,
			Detail: "this person is disabled in ARX; an ARX admin enables them again (arx users enable EMAIL)"}
	}
	u, err := h.rt.SCIMSetActive(r.Context(), u.ID, active)
	if err != nil {
		return scim.Resource{}, scimError(err)
	}
	return userResource(u), nil
}

// Patch takes what Okta and Entra ID send: active (deprovisioning, as a
// path or inside a value object, a boolean or "False"); a userName or
// email equal to the person's; name and other profile attributes, which
// ARX does not keep.
func (h scimUsers) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	u, err := h.user(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	active := u.DisabledAt == nil
	set := func(attr string, v any) error {
		switch strings.ToLower(attr) {
		case "active":
			b, ok := activeOf(v)
			if !ok {
				return scimerr.ScimErrorBadRequest("active is not a boolean")
			}
			active = b
		case "username":
			if s, _ := v.(string); !strings.EqualFold(s, u.Email) {
				return mutability("userName")
			}
		case "emails":
			if s, ok := v.(string); ok && !strings.EqualFold(s, u.Email) {
				return mutability("the email")
			}
		}
		return nil
	}
	for _, op := range ops {
		if op.Op == scim.PatchOperationRemove {
			if op.Path != nil && strings.EqualFold(op.Path.AttributePath.AttributeName, "active") {
				return scim.Resource{}, mutability("active")
			}
			continue
		}
		if op.Path == nil {
			m, ok := op.Value.(map[string]any)
			if !ok {
				return scim.Resource{}, scimerr.ScimErrorBadRequest("an operation without a path needs an object value")
			}
			for k, v := range m {
				if err := set(k, v); err != nil {
					return scim.Resource{}, err
				}
			}
			continue
		}
		if err := set(op.Path.AttributePath.AttributeName, op.Value); err != nil {
			return scim.Resource{}, err
		}
	}
	return h.setActive(r, u, active)
}

// Delete disables the person: ARX keeps people, whom the record names.
func (h scimUsers) Delete(r *http.Request, id string) error {
	if _, err := h.rt.SCIMSetActive(r.Context(), id, false); err != nil {
		return scimError(err)
	}
	return nil
}

type scimGroups struct{ rt *runtime.Runtime }

func groupResource(g *store.Group, emails map[string]string) scim.Resource {
	created := g.CreatedAt
	members := make([]any, 0, len(g.Members))
	for _, id := range g.Members {
		members = append(members, map[string]any{"value": id, "display": emails[id], "$ref": "Users/" + id, "type": "User"})
	}
	res := scim.Resource{ID: g.ID, Meta: scim.Meta{Created: &created},
		Attributes: scim.ResourceAttributes{"displayName": g.Name, "members": members}}
	if g.ExternalID != "" {
		res.ExternalID = optional.NewString(g.ExternalID)
	}
	return res
}

func (h scimGroups) emails(r *http.Request) (map[string]string, error) {
	users, err := h.rt.Store().Users(r.Context())
	if err != nil {
		return nil, scimError(h.rt.ReadFailed("scim users", err))
	}
	m := make(map[string]string, len(users))
	for _, u := range users {
		m[u.ID] = u.Email
	}
	return m, nil
}

func (h scimGroups) group(r *http.Request, id string) (*store.Group, error) {
	gs, err := h.rt.Store().Groups(r.Context())
	if err != nil {
		return nil, scimError(h.rt.ReadFailed("scim groups", err))
	}
	for i := range gs {
		if gs[i].ID == id {
			return &gs[i], nil
		}
	}
	return nil, scimerr.ScimErrorResourceNotFound(id)
}

// memberIDs reads a members value: a list of {"value": id}.
func memberIDs(v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		list = []any{v} // one member, not in a list
	}
	ids := make([]string, 0, len(list))
	for _, m := range list {
		mm, _ := m.(map[string]any)
		id, _ := mm["value"].(string)
		if id == "" {
			return nil, scimerr.ScimErrorBadRequest("a member needs a value: the person's id")
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (h scimGroups) edit(r *http.Request, id string, create bool, edit func(g *store.Group) error) (scim.Resource, error) {
	g, err := h.rt.SCIMEditGroup(r.Context(), id, create, edit)
	if err != nil {
		var se scimerr.ScimError
		if errors.As(err, &se) {
			return scim.Resource{}, se
		}
		return scim.Resource{}, scimError(err)
	}
	emails, err := h.emails(r)
	if err != nil {
		return scim.Resource{}, err
	}
	return groupResource(g, emails), nil
}

func groupOf(id string, a scim.ResourceAttributes) (*store.Group, error) {
	name, _ := a["displayName"].(string)
	members, err := memberIDs(a["members"])
	if err != nil {
		return nil, err
	}
	ext, _ := a["externalId"].(string)
	return &store.Group{ID: id, Name: name, ExternalID: ext, Members: members}, nil
}

func (h scimGroups) Create(r *http.Request, a scim.ResourceAttributes) (scim.Resource, error) {
	g, err := groupOf(uuid.NewString(), a)
	if err != nil {
		return scim.Resource{}, err
	}
	return h.edit(r, g.ID, true, func(to *store.Group) error {
		to.Name, to.ExternalID, to.Members = g.Name, g.ExternalID, g.Members
		return nil
	})
}

func (h scimGroups) Get(r *http.Request, id string) (scim.Resource, error) {
	g, err := h.group(r, id)
	if err != nil {
		return scim.Resource{}, err
	}
	emails, err := h.emails(r)
	if err != nil {
		return scim.Resource{}, err
	}
	return groupResource(g, emails), nil
}

func (h scimGroups) GetAll(r *http.Request, p scim.ListRequestParams) (scim.Page, error) {
	gs, err := h.rt.Store().Groups(r.Context())
	if err != nil {
		return scim.Page{}, scimError(h.rt.ReadFailed("scim groups", err))
	}
	emails, err := h.emails(r)
	if err != nil {
		return scim.Page{}, err
	}
	res := make([]scim.Resource, 0, len(gs))
	for i := range gs {
		res = append(res, groupResource(&gs[i], emails))
	}
	return page(res, p), nil
}

func (h scimGroups) Replace(r *http.Request, id string, a scim.ResourceAttributes) (scim.Resource, error) {
	g, err := groupOf(id, a)
	if err != nil {
		return scim.Resource{}, err
	}
	return h.edit(r, id, false, func(to *store.Group) error {
		to.Name, to.ExternalID, to.Members = g.Name, g.ExternalID, g.Members
		return nil
	})
}

// Patch takes Okta's and Entra ID's forms: replace displayName; add,
// remove or replace members (remove by a value filter, members[value eq
// "ID"], or by a list of values).
func (h scimGroups) Patch(r *http.Request, id string, ops []scim.PatchOperation) (scim.Resource, error) {
	return h.edit(r, id, false, func(g *store.Group) error { return patchGroup(g, ops) })
}

// patchGroup applies patch operations to a group, in the transaction that
// writes it.
func patchGroup(g *store.Group, ops []scim.PatchOperation) error {
	var err error
	for _, op := range ops {
		attr := ""
		if op.Path != nil {
			attr = strings.ToLower(op.Path.AttributePath.AttributeName)
		}
		switch {
		case op.Path == nil:
			m, ok := op.Value.(map[string]any)
			if !ok {
				return scimerr.ScimErrorBadRequest("an operation without a path needs an object value")
			}
			if name, ok := m["displayName"].(string); ok {
				g.Name = name
			}
			if v, ok := m["members"]; ok {
				ids, err := memberIDs(v)
				if err != nil {
					return err
				}
				if op.Op == scim.PatchOperationAdd {
					g.Members = append(g.Members, ids...)
				} else {
					g.Members = ids
				}
			}
		case attr == "displayname":
			name, ok := op.Value.(string)
			if !ok || op.Op == scim.PatchOperationRemove {
				return scimerr.ScimErrorBadRequest("displayName is a string and cannot be removed")
			}
			g.Name = name
		case attr == "members":
			var ids []string
			if op.Path.ValueExpression != nil {
				e, ok := op.Path.ValueExpression.(*filter.AttributeExpression)
				if !ok || e.AttributePath.AttributeName != "value" || e.Operator != filter.EQ {
					return scimerr.ScimErrorBadRequest("members can be picked only by value eq \"ID\"")
				}
				id, _ := e.CompareValue.(string)
				ids = []string{id}
			} else if ids, err = memberIDs(op.Value); err != nil {
				return err
			}
			switch op.Op {
			case scim.PatchOperationAdd:
				g.Members = append(g.Members, ids...)
			case scim.PatchOperationReplace:
				g.Members = ids
			case scim.PatchOperationRemove:
				if ids == nil && op.Path.ValueExpression == nil {
					g.Members = nil // remove all
				}
				g.Members = slices.DeleteFunc(g.Members, func(m string) bool { return slices.Contains(ids, m) })
			}
		case attr == "externalid":
			g.ExternalID, _ = op.Value.(string)
		default:
			return scimerr.ScimErrorBadRequest(fmt.Sprintf("ARX's groups have no %s", op.Path.AttributePath.AttributeName))
		}
	}
	return nil
}

func (h scimGroups) Delete(r *http.Request, id string) error {
	if err := h.rt.SCIMDeleteGroup(r.Context(), id); err != nil {
		return scimError(err)
	}
	return nil
}
