package runtime

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/record"
)

// SCIM: the identity provider keeps ARX's people and groups (the HTTP
// side, RFC 7644, is internal/api/scim.go). A person it deprovisions is
// disabled at once, with everything that ends (changeDisabled); the
// groups it keeps give roles where the server maps group names to roles
// (sso.Roles), the same mapping single sign-on applies at sign-in.

// Entry types of SCIM groups.
const (
	TypeGroupSet     = "people.group_set"
	TypeGroupDeleted = "people.group_deleted"
)

// scimActor names the identity provider in the record.
const scimActor = "scim"

// SCIMOn says whether the server takes SCIM requests.
func (r *Runtime) SCIMOn() bool { return r.scimToken != nil }

// SCIMAuthorized checks a SCIM request's bearer token, in constant time.
func (r *Runtime) SCIMAuthorized(token string) bool {
	if r.scimToken == nil || token == "" {
		return false
	}
	h := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(h[:], r.scimToken) == 1
}

// SCIMCreateUser adds a person the identity provider provisions (a
// manager until a group says otherwise), disabled if it says inactive.
// They sign in through the provider: no set-up link is made.
func (r *Runtime) SCIMCreateUser(ctx context.Context, email string, active bool) (*store.User, error) {
	email, err := normalizeEmail(email)
	if err != nil {
		return nil, err
	}
	now := r.now()
	u := &store.User{ID: uuid.NewString(), Email: email, Role: store.RoleManager, CreatedAt: now}
	if !active {
		u.DisabledAt = &now
	}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.UserByEmail(email); err == nil {
			return arxerr.New(arxerr.UserExists, "%s already has an account", email)
		}
		if err := tx.InsertUser(u); err != nil {
			return err
		}
		if err := tx.Append(record.UserAdded(scimActor, now, email, u.Role, record.LinkNone)); err != nil {
			return err
		}
		if !active {
			return tx.Append(record.UserDisabled(scimActor, now, email, 0))
		}
		return nil
	})
	if err != nil {
		return nil, r.writeFailed("scim create user", err)
	}
	return u, nil
}

// SCIMSetActive enables or disables the person with id, as the identity
// provider says; disabling ends their sessions, tokens and grants toward
// unreached quorums at once, on every replica.
func (r *Runtime) SCIMSetActive(ctx context.Context, id string, active bool) (*store.User, error) {
	u, err := r.changeDisabled(ctx, scimActor, "", func(tx store.Tx) (*store.User, error) {
		u, err := tx.User(id)
		if errors.Is(err, store.ErrNotFound) {
			return nil, arxerr.New(arxerr.UserNotFound, "no person %s", truncate(id, 64))
		}
		return u, err
	}, !active)
	if err != nil {
		return nil, err
	}
	if !active {
		r.log.Info("scim: person deprovisioned", "user", u.Email)
	}
	return u, nil
}

// Bounds of SCIM groups: members in one group, and members one change
// may add or remove (each is named in the change's entry, which has a
// size limit).
const (
	MaxGroupMembers     = 100000
	MaxGroupChangeNames = 1000
)

// SCIMEditGroup adds a group (create: id is new) or changes one, in one
// transaction: edit gets the group as it stands (members by person id;
// unknown ids are refused) and changes it, so that concurrent changes do
// not undo each other. Members added and removed get the roles their
// groups now say (all members when the name changed); the entry names
// who was added and removed.
func (r *Runtime) SCIMEditGroup(ctx context.Context, id string, create bool, edit func(g *store.Group) error) (*store.Group, error) {
	now := r.now()
	var out *store.Group
	var refused error // edit's own error, answered as it is
	err := r.store.Update(ctx, func(tx store.Tx) error {
		refused = nil
		all, err := tx.Groups()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(all, func(o store.Group) bool { return o.ID == id })
		var old store.Group
		switch {
		case create && i >= 0:
			return arxerr.New(arxerr.Conflict, "group %s exists", truncate(id, 64))
		case create:
			old = store.Group{ID: id, CreatedAt: now}
		case i < 0:
			return arxerr.New(arxerr.NotFound, "no group %s", truncate(id, 64))
		default:
			old = all[i]
		}
		g := old
		g.Members = slices.Clone(old.Members)
		if err := edit(&g); err != nil {
			refused = err
			return err
		}
		g.ID, g.CreatedAt = old.ID, old.CreatedAt
		g.Members = slices.Compact(slices.Sorted(slices.Values(g.Members)))
		if g.Name == "" || record.TextProblem(g.Name, 256) != "" || record.TextProblem(g.ExternalID, 256) != "" {
			return arxerr.New(arxerr.BadRequest, "a group needs a displayName (and an externalId, if any) of at most 256 bytes of text")
		}
		if len(g.Members) > MaxGroupMembers {
			return arxerr.New(arxerr.BadRequest, "a group of more than %d members", MaxGroupMembers)
		}
		added, removed := diffSorted(old.Members, g.Members)
		if len(added)+len(removed) > MaxGroupChangeNames {
			return arxerr.New(arxerr.BadRequest, "one change adds or removes %d members; send at most %d at a time", len(added)+len(removed), MaxGroupChangeNames)
		}
		emails := func(ids []string, mustExist bool) ([]string, error) {
			out := make([]string, 0, len(ids))
			for _, id := range ids {
				u, err := tx.User(id)
				switch {
				case errors.Is(err, store.ErrNotFound) && mustExist:
					return nil, arxerr.New(arxerr.UserNotFound, "no person %s to be a member", truncate(id, 64))
				case errors.Is(err, store.ErrNotFound):
					out = append(out, id)
				case err != nil:
					return nil, err
				default:
					out = append(out, u.Email)
				}
			}
			return out, nil
		}
		addedEmails, err := emails(added, true)
		if err != nil {
			return err
		}
		removedEmails, err := emails(removed, false)
		if err != nil {
			return err
		}
		if err := tx.PutGroup(&g); errors.Is(err, store.ErrConflict) {
			return arxerr.New(arxerr.Conflict, "another group is named %q", truncate(g.Name, 64))
		} else if err != nil {
			return err
		}
		if i >= 0 {
			all[i] = g
		} else {
			all = append(all, g)
		}
		if err := tx.Append(&record.Entry{Type: TypeGroupSet, Actor: scimActor, Time: now,
			Data: map[string]any{"group": g.ID, "name": g.Name, "added": addedEmails, "removed": removedEmails, "members": len(g.Members)}}); err != nil {
			return err
		}
		affected := append(added, removed...)
		if g.Name != old.Name {
			affected = append(affected, g.Members...)
		}
		out = &g
		return r.groupRoles(tx, all, affected, now)
	})
	if refused != nil {
		return nil, refused
	}
	if err != nil {
		return nil, r.writeFailed("scim group", err)
	}
	return out, nil
}

// diffSorted is what b has that a has not (added), and the reverse.
func diffSorted(a, b []string) (added, removed []string) {
	for _, x := range b {
		if _, in := slices.BinarySearch(a, x); !in {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if _, in := slices.BinarySearch(b, x); !in {
			removed = append(removed, x)
		}
	}
	return added, removed
}

// SCIMDeleteGroup removes a group; its members get the roles their other
// groups say.
func (r *Runtime) SCIMDeleteGroup(ctx context.Context, id string) error {
	now := r.now()
	err := r.store.Update(ctx, func(tx store.Tx) error {
		all, err := tx.Groups()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(all, func(o store.Group) bool { return o.ID == id })
		if i < 0 {
			return arxerr.New(arxerr.NotFound, "no group %s", truncate(id, 64))
		}
		gone := all[i]
		if err := tx.DeleteGroup(id); err != nil {
			return err
		}
		if err := tx.Append(&record.Entry{Type: TypeGroupDeleted, Actor: scimActor, Time: now,
			Data: map[string]any{"group": id, "name": gone.Name}}); err != nil {
			return err
		}
		return r.groupRoles(tx, slices.Delete(all, i, i+1), gone.Members, now)
	})
	if err != nil {
		return r.writeFailed("scim delete group", err)
	}
	return nil
}

// groupRoles gives each person in users the role the groups (all of them,
// as they now are) map them to, where the server maps groups to roles:
// admin in an admin group, manager otherwise (leaving the admin group
// takes admin away). Each change is recorded.
func (r *Runtime) groupRoles(tx store.Tx, all []store.Group, users []string, now time.Time) error {
	if r.sso == nil || !r.sso.Roles().On() {
		return nil
	}
	slices.Sort(users)
	for _, id := range slices.Compact(users) {
		var names []string
		for _, g := range all {
			if _, in := slices.BinarySearch(g.Members, id); in {
				names = append(names, g.Name)
			}
		}
		role := r.sso.Roles().Of(names)
		if role == "" {
			role = store.RoleManager
		}
		u, err := tx.User(id)
		if errors.Is(err, store.ErrNotFound) {
			continue // a member who is no longer a person
		} else if err != nil {
			return err
		}
		if strings.EqualFold(u.Role, role) {
			continue
		}
		from := u.Role
		u.Role = role
		if err := tx.UpdateUser(u); err != nil {
			return err
		}
		if err := tx.Append(record.UserRoleChanged(scimActor, now, u.Email, from, role)); err != nil {
			return err
		}
	}
	return nil
}
