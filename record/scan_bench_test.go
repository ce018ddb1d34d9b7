package record

import (
	"crypto/sha256"
	"testing"
	"time"
)

func benchEntry(b *testing.B) []byte {
	t0 := time.Date(2026, 11, 26, 7, 0, 0, 0, time.UTC)
	e := &Entry{Index: 123456, Time: t0, Agent: "0f8e7c52-1d3a-4b7e-9a1d-0c7e5b0c1234", Prev: HashString(LeafHash([]byte("x"))),
		Type: TypeCredentialIssued, Call: "9a1d0c7e-5b0c-4d2e-8f8e-7c521d3a4b7e", Connector: "salesforce", Action: "account.read",
		Risk: "low", Actor: "agent:0f8e7c52-1d3a-4b7e-9a1d-0c7e5b0c1234",
		Data: map[string]any{"summary": "account 0017 (read)", "expires_at": t0.Format(TimeFormat), "token_id": "t-0f8e7c52"}}
	data, err := e.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

func BenchmarkScanEntry(b *testing.B) {
	data := benchEntry(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ScanEntry(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeafHash(b *testing.B) {
	data := benchEntry(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		LeafHash(data)
	}
}

func BenchmarkSHA256(b *testing.B) {
	data := benchEntry(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}

func BenchmarkChainCheck(b *testing.B) {
	data := benchEntry(b)
	leaf := LeafHash(data)
	var c ChainChecker
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c.Check(123456, data, leaf)
	}
}
