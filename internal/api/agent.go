package api

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/manifest"
)

// The agent side's view of the calling agent itself, for programs that act
// for one agent and must follow its job description and its fate: arx mcp
// shows an MCP client only the tools the manifest declares, and ends its
// sessions as soon as the agent is terminated.
//
//	GET /v1/agent                  the calling agent and its parsed manifest
//	GET /v1/agent/status?wait=25s  long poll: answers 200 while the agent is
//	                               usable, at the latest when wait runs out, and
//	                               the agent's refusal (agent.terminated,
//	                               agent.suspended, auth.invalid_token) as soon
//	                               as that holds

// Agent status long poll.
const (
	// statusRecheck bounds how late a change that no event announces is seen:
	// a termination committed by another replica, a revoked token.
	statusRecheck = time.Second
	// maxStatusWait bounds one long poll.
	maxStatusWait = 60 * time.Second
)

// agentRoutes registers the agent-side endpoints about the calling agent.
func (s *server) agentRoutes(h func(pattern string, fn handlerFunc)) {
	h("GET /v1/agent", s.agentOnly(s.self))
	h("GET /v1/agent/status", s.agentOnly(s.selfStatus))
}

// selfView is the answer of GET /v1/agent.
type selfView struct {
	Agent    agentView          `json:"agent"`
	Manifest *manifest.Manifest `json:"manifest"`
}

func (s *server) self(w http.ResponseWriter, r *http.Request) error {
	a := principal(r).Agent
	m, err := s.rt.Manifest(a)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, selfView{Agent: viewAgent(a, false), Manifest: m})
	return nil
}

// statusView is the answer of GET /v1/agent/status while the agent is usable.
type statusView struct {
	AgentID string `json:"agent_id"`
	Status  string `json:"status"`
}

// selfStatus holds the request until the agent is no longer usable, the wait
// runs out or the server shuts down. A termination on this replica wakes it
// at once (the runtime's event); anything else is seen within statusRecheck,
// since the caller's token is checked against the database again each time.
func (s *server) selfStatus(w http.ResponseWriter, r *http.Request) error {
	var wait time.Duration
	if q := r.URL.Query().Get("wait"); q != "" {
		d, err := time.ParseDuration(q)
		if err != nil || d < 0 {
			return arxerr.New(arxerr.BadRequest, "wait %q is not a duration such as 25s", truncate(q, 32))
		}
		wait = min(d, maxStatusWait)
	}
	p := principal(r)
	answer := func() error {
		writeJSON(w, http.StatusOK, statusView{AgentID: p.Agent.ID, Status: p.Agent.Status})
		return nil
	}
	if wait == 0 {
		return answer()
	}
	token := bearer(r)
	defer s.rt.Watch(p.Agent.ID)()
	events, stop := s.rt.Events().Subscribe()
	defer stop()
	down := shuttingDown(r)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	recheck := time.NewTicker(statusRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-r.Context().Done():
			return r.Context().Err()
		case <-down:
			return answer() // the caller asks again, elsewhere or later
		case <-deadline.C:
			return answer()
		case e := <-events:
			if e.AgentID != p.Agent.ID && e.Type != "resync" {
				continue
			}
		case <-recheck.C:
		}
		np, err := s.rt.Authenticate(r.Context(), token)
		if err != nil {
			// A termination revokes the agent's tokens: say what happened
			// to the agent, not only to the token.
			var ae *arxerr.Error
			if errors.As(err, &ae) && ae.Code == arxerr.InvalidToken {
				if a, aerr := s.rt.Store().Agent(r.Context(), p.Agent.ID); aerr == nil && a.Status == store.AgentTerminated {
					return arxerr.New(arxerr.AgentTerminated, "agent %s is terminated", a.Name)
				}
			}
			return err
		}
		p = np
	}
}

// shutdowns maps each *http.Server that has served a status long poll to a
// channel closed when it shuts down, so that open long polls do not hold up
// a graceful shutdown.
var shutdowns sync.Map // *http.Server -> chan struct{}

func shuttingDown(r *http.Request) <-chan struct{} {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return nil
	}
	ch := make(chan struct{})
	if prev, loaded := shutdowns.LoadOrStore(srv, ch); loaded {
		return prev.(chan struct{})
	}
	srv.RegisterOnShutdown(func() {
		close(ch)
		shutdowns.Delete(srv)
	})
	return ch
}
