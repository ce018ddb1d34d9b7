package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/sealed"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
	"github.com/arxsec/arx/record"
)

// Decisions from chat tools. A person links an account of a chat tool
// (Slack, or one that speaks the generic signed webhook) to themselves
// once, in the console: the chat tool's verified request names the account
// (never by display name), ARX answers it with a link code, and the person
// opens the code's page signed in and confirms. From then on a decision
// made by that account is the person's, made under the same rules as in
// the console (approver, self-approval, quorum, passkeys: an agent whose
// job description requires passkey-signed decisions refuses chat ones),
// and its entry names the account (data.via).

// ChatAccount is an account of a chat tool.
type ChatAccount struct {
	Provider string `json:"p"` // "slack", or the integration's name
	Subject  string `json:"s"` // its stable id there (Slack: team/user)
	Name     string `json:"n"` // what the tool shows as its name
}

// ChatLinkTTL is how long a link code lasts.
const ChatLinkTTL = 10 * time.Minute

// TypeChatLinked and TypeChatUnlinked record a chat account linked to a
// person and unlinked.
const (
	TypeChatLinked   = "person.chat_linked"
	TypeChatUnlinked = "person.chat_unlinked"
)

// validChat says what is wrong with an account, if anything.
func validChat(a ChatAccount) error {
	switch {
	case !manifest.ValidName(a.Provider, 128):
		return arxerr.New(arxerr.BadRequest, "chat provider %q is not a valid name", truncate(a.Provider, 32))
	case a.Subject == "" || len(a.Subject) > 256 || record.TextProblem(a.Subject, 256) != "":
		return arxerr.New(arxerr.BadRequest, "chat account id is empty, too long or not text")
	case len(a.Name) > 256 || record.TextProblem(a.Name, 256) != "":
		return arxerr.New(arxerr.BadRequest, "chat account name is too long or not text")
	}
	return nil
}

// chatKey is the deployment's key for link codes.
func (r *Runtime) chatKey(ctx context.Context) ([]byte, error) {
	return r.deploymentKey(ctx, "chat_link_key")
}

// deploymentKey is one of the deployment's MAC keys (for link codes, sign-in
// flows): made once, kept in the store's settings under name, so that
// every replica checks what the others signed.
func (r *Runtime) deploymentKey(ctx context.Context, name string) ([]byte, error) {
	if k, err := r.store.Meta(ctx, name); err == nil {
		return hex.DecodeString(k)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, r.ReadFailed(name, err)
	}
	var b [32]byte
	rand.Read(b[:])
	k := hex.EncodeToString(b[:])
	err := r.store.Update(ctx, func(tx store.Tx) error {
		// Another replica may have made one meanwhile: the stored one wins.
		if old, err := tx.Meta(name); err == nil {
			k = old
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.SetMeta(name, k)
	})
	if err != nil {
		return nil, r.writeFailed(name, err)
	}
	return hex.DecodeString(k)
}

type linkClaims struct {
	ChatAccount
	Exp int64 `json:"e"`
}

// ChatLinkCode is the code an account's owner opens in the console to
// link it (valid ChatLinkTTL); it names the account, signed.
func (r *Runtime) ChatLinkCode(ctx context.Context, a ChatAccount) (string, error) {
	if err := validChat(a); err != nil {
		return "", err
	}
	key, err := r.chatKey(ctx)
	if err != nil {
		return "", err
	}
	return sealed.Seal(key, "chat link", linkClaims{a, r.now().Add(ChatLinkTTL).Unix()}), nil
}

// ChatLinkAccount reads the account a link code names.
func (r *Runtime) ChatLinkAccount(ctx context.Context, code string) (ChatAccount, error) {
	bad := arxerr.New(arxerr.ChatLinkInvalid, "the link is not valid, or has expired")
	key, err := r.chatKey(ctx)
	if err != nil {
		return ChatAccount{}, err
	}
	var c linkClaims
	if sealed.Open(key, "chat link", code, 2048, &c) != nil || validChat(c.ChatAccount) != nil {
		return ChatAccount{}, bad
	}
	if r.now().Unix() > c.Exp {
		return ChatAccount{}, bad
	}
	return c.ChatAccount, nil
}

// LinkChat links the account a link code names to the person p, replacing
// any earlier link of the account; the record says so.
func (r *Runtime) LinkChat(ctx context.Context, p *Principal, code string) (*store.ChatLink, error) {
	if !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "only a person links a chat account to themselves")
	}
	a, err := r.ChatLinkAccount(ctx, code)
	if err != nil {
		return nil, err
	}
	verify := r.chatVerifiers[a.Provider]
	if verify == nil && a.Provider == "slack" {
		verify = func(context.Context, string, string) error {
			return errors.New("this server cannot check a Slack account's owner: it needs the Slack app's bot token (arx serve --slack-bot-token-file)")
		}
	}
	if verify != nil {
		if err := verify(ctx, a.Subject, p.User.Email); err != nil {
			e := arxerr.New(arxerr.ChatLinkInvalid, "the %s account was not linked: %s", a.Provider, truncate(err.Error(), 300))
			e.Hint = "link only your own account, whose email in " + a.Provider + " is the one you sign in to ARX with"
			return nil, e
		}
	}
	now := r.now()
	l := &store.ChatLink{Provider: a.Provider, Subject: a.Subject, UserID: p.User.ID, Name: a.Name, CreatedAt: now}
	err = r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.LinkChat(l); err != nil {
			return err
		}
		return tx.Append(&record.Entry{Type: TypeChatLinked, Actor: p.Actor(), Time: now,
			Data: map[string]any{"user": p.User.Email, "provider": a.Provider, "subject": a.Subject, "name": a.Name}})
	})
	if err != nil {
		return nil, r.writeFailed("link chat account", err)
	}
	r.log.Info("chat account linked", "user", p.User.Email, "provider", a.Provider, "subject", a.Subject)
	return l, nil
}

// UnlinkChat removes one of the person's chat links.
func (r *Runtime) UnlinkChat(ctx context.Context, p *Principal, provider, subject string) error {
	if !p.IsPerson() {
		return arxerr.New(arxerr.Forbidden, "only a person unlinks their chat accounts")
	}
	now := r.now()
	err := r.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.UnlinkChat(p.User.ID, provider, subject); errors.Is(err, store.ErrNotFound) {
			return arxerr.New(arxerr.ChatNotLinked, "no such chat account is linked to you")
		} else if err != nil {
			return err
		}
		return tx.Append(&record.Entry{Type: TypeChatUnlinked, Actor: p.Actor(), Time: now,
			Data: map[string]any{"user": p.User.Email, "provider": provider, "subject": subject}})
	})
	if err != nil {
		return r.writeFailed("unlink chat account", err)
	}
	return nil
}

// ChatLinks lists the person's chat accounts.
func (r *Runtime) ChatLinks(ctx context.Context, p *Principal) ([]store.ChatLink, error) {
	if !p.IsPerson() {
		return nil, arxerr.New(arxerr.Forbidden, "chat links are people's")
	}
	l, err := r.store.ChatLinks(ctx, p.User.ID)
	if err != nil {
		return nil, r.ReadFailed("chat links", err)
	}
	return l, nil
}

// ChatPerson is the person a chat account is linked to: ChatNotLinked
// when none (or a disabled one).
func (r *Runtime) ChatPerson(ctx context.Context, a ChatAccount) (*Principal, error) {
	l, err := r.store.ChatLink(ctx, a.Provider, a.Subject)
	if errors.Is(err, store.ErrNotFound) {
		return nil, arxerr.New(arxerr.ChatNotLinked, "this %s account is not linked to anyone in ARX", a.Provider)
	}
	if err != nil {
		return nil, r.ReadFailed("chat link", err)
	}
	u, err := r.store.User(ctx, l.UserID)
	if err != nil {
		return nil, r.ReadFailed("chat link", err)
	}
	if u.DisabledAt != nil {
		return nil, arxerr.New(arxerr.ChatNotLinked, "the person this %s account is linked to is disabled", a.Provider)
	}
	return &Principal{Kind: store.TokenUser, User: u}, nil
}

// ChatDecide decides a call as the person the chat account is linked to.
func (r *Runtime) ChatDecide(ctx context.Context, a ChatAccount, callID string, grant bool, reason string) (*ApprovalView, *Principal, error) {
	p, err := r.ChatPerson(ctx, a)
	if err != nil {
		return nil, nil, err
	}
	v, err := r.decide(ctx, p, callID, grant, reason, nil, &a)
	return v, p, err
}
