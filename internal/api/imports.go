package api

import (
	"net/http"

	"github.com/arxsec/arx/arxerr"
	"github.com/arxsec/arx/internal/runtime"
)

// importRecord attaches part of a local record (an SDK's JSONL file) to an
// agent's record: POST /v1/agents/{id}/record/import.
func (s *server) importRecord(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Source  string   `json:"source"`
		Chain   string   `json:"chain"`
		Entries []string `json:"entries"`
	}
	if err := decode(r, MaxManifestBytes, &req); err != nil {
		return err
	}
	if len(req.Entries) > runtime.MaxImportEntries {
		return arxerr.New(arxerr.BadRequest, "send at most %d entries per request", runtime.MaxImportEntries)
	}
	entries := make([][]byte, len(req.Entries))
	for i, e := range req.Entries {
		entries[i] = []byte(e)
	}
	res, err := s.rt.ImportRecord(r.Context(), principal(r), r.PathValue("id"),
		runtime.ImportRequest{Source: req.Source, Chain: req.Chain, Entries: entries})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
