package sqlite_test

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/arxsec/arx/internal/store"
	"github.com/arxsec/arx/internal/store/sqlite"
	"github.com/arxsec/arx/internal/store/storetest"
)

// open opens the store at path and closes it when the test ends.
func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, filepath.Join(t.TempDir(), "arx.db")) })
}

func TestReopen(t *testing.T) {
	var mu sync.Mutex
	paths := map[store.Store]string{}
	opened := func(t *testing.T, path string) store.Store {
		s := open(t, path)
		mu.Lock()
		paths[s] = path
		mu.Unlock()
		return s
	}
	storetest.RunReopen(t,
		func(t *testing.T) store.Store { return opened(t, filepath.Join(t.TempDir(), "arx.db")) },
		func(t *testing.T, s store.Store) store.Store {
			mu.Lock()
			path := paths[s]
			mu.Unlock()
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			return opened(t, path)
		})
}
