package manifest

// ExportFormat names the JSON document Export describes.
const ExportFormat = "arx.dev/v1/manifest-export"

// Export is a parsed manifest as JSON, for tools that cannot parse YAML the
// way Parse does (the Python SDK's local-only mode reads it): the manifest
// after strict parsing and defaults, with the hash of the YAML it came from
// so that a stale export can be told from a fresh one.
//
// `arx manifest export FILE` prints it.
type Export struct {
	Format       string    `json:"format"`        // ExportFormat
	ManifestHash string    `json:"manifest_hash"` // Hash of the YAML bytes
	Manifest     *Manifest `json:"manifest"`
}

// NewExport parses the YAML data and returns its Export.
func NewExport(data []byte) (*Export, error) {
	m, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return &Export{Format: ExportFormat, ManifestHash: Hash(data), Manifest: m}, nil
}
