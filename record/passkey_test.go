package record

import (
	"encoding/hex"
	"testing"
	"time"
)

// TestDecisionBytes pins what a passkey signs: a signature made today must
// verify for as long as the record is kept, so these bytes never change
// (a new encoding gets a new DecisionVersion).
func TestDecisionBytes(t *testing.T) {
	d := Decision{Call: "01a23ec2-2b56-7354-991b-5fc8292eb7b3", Agent: "d917e088-34e6-4485-8700-2e981a66715b",
		Connector: "crm", Action: "account.delete", Risk: "high", Summary: "delete account 0017 \"dup\"\n",
		By: "boss@example.com", Verdict: DecisionApprove, Reason: "checked ✓", At: time.Date(2026, 12, 4, 9, 30, 0, 123456789, time.UTC)}
	const want = `{"action":"account.delete","agent":"d917e088-34e6-4485-8700-2e981a66715b","by":"boss@example.com",` +
		`"call":"01a23ec2-2b56-7354-991b-5fc8292eb7b3","connector":"crm","decided_at":"2026-12-04T09:30:00.123456Z",` +
		`"decision":"approve","reason":"checked ✓","risk":"high","summary":"delete account 0017 \"dup\"\n","v":"arx.decision/1"}`
	if got := string(d.Bytes()); got != want {
		t.Fatalf("Bytes:\n got %s\nwant %s", got, want)
	}
	digest := d.Digest()
	if got := hex.EncodeToString(digest[:]); got != "d2a5165d81f7d1ae04f9a00a8d46bcee3eba361b3f7c2f5948ccca6a505ba6c7" {
		t.Fatalf("Digest = %s", got)
	}
	d.Summary = string([]byte{0xff}) // not UTF-8: encoded, never a panic
	if len(d.Bytes()) == 0 {
		t.Fatal("no bytes")
	}
}
