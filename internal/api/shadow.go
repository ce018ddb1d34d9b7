package api

import (
	"net/http"
	"strings"

	"github.com/arxsec/arx/arxerr"
)

// Changing a hired agent's job description, and trying one in shadow:
// POST /v1/agents/{id}/manifest, GET /v1/agents/{id}/shadow,
// POST /v1/agents/{id}/shadow/promote and .../shadow/discard.

func (s *server) applyManifest(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Manifest string `json:"manifest"`
		Shadow   bool   `json:"shadow"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Manifest) == "" {
		return arxerr.New(arxerr.BadRequest, "manifest is empty")
	}
	a, err := s.rt.ApplyManifest(r.Context(), principal(r), r.PathValue("id"), []byte(req.Manifest), req.Shadow)
	if err != nil {
		return err
	}
	return s.writeAgent(w, r, a)
}

func (s *server) promoteShadow(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ManifestHash string `json:"manifest_hash"` // the shadow reviewed; "": whichever it is
	}
	if r.ContentLength != 0 {
		if err := decode(r, MaxBodyBytes, &req); err != nil {
			return err
		}
	}
	a, err := s.rt.PromoteShadow(r.Context(), principal(r), r.PathValue("id"), req.ManifestHash)
	if err != nil {
		return err
	}
	return s.writeAgent(w, r, a)
}

func (s *server) discardShadow(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decode(r, MaxBodyBytes, &req); err != nil {
		return err
	}
	a, err := s.rt.DiscardShadow(r.Context(), principal(r), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return s.writeAgent(w, r, a)
}

func (s *server) shadowReport(w http.ResponseWriter, r *http.Request) error {
	a, err := s.agentByPath(r)
	if err != nil {
		return err
	}
	if !s.seesAgent(principal(r), a) {
		return arxerr.New(arxerr.AgentNotFound, "no agent %s", truncate(r.PathValue("id"), 64))
	}
	rep, err := s.rt.Shadow(r.Context(), principal(r), a.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
