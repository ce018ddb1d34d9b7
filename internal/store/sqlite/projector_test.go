package sqlite

import "testing"

func TestCheckpointMode(t *testing.T) {
	for _, c := range []struct {
		flushes int
		wal     int64
		want    string
	}{
		{1, 0, ""},
		{1, 4 << 20, ""},
		{CheckpointFlushes - 1, WALLimit, ""},
		{CheckpointFlushes, 0, "PASSIVE"},
		{CheckpointFlushes, WALLimit, "PASSIVE"},
		{CheckpointFlushes + 5, 1 << 20, "PASSIVE"},
		{1, WALLimit + 1, "RESTART"}, // past the limit: at once, whatever the count
		{CheckpointFlushes, 10 * WALLimit, "RESTART"},
	} {
		if got := checkpointMode(c.flushes, c.wal); got != c.want {
			t.Errorf("checkpointMode(%d flushes, WAL %d bytes) = %q, want %q", c.flushes, c.wal, got, c.want)
		}
	}
}
