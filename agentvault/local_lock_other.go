//go:build !unix

package agentvault

import (
	"errors"
	"os"
)

// lockFile is not implemented off Unix: local records need flock(2) to stay
// one chain when several processes write them.
func lockFile(*os.File) error {
	return errors.New("local records need a Unix system (flock)")
}

func unlockFile(*os.File) error { return nil }
