package chat

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestSlackMessage: whatever a webhook message holds is a verbatim section
// (Slack makes no link of a URL or channel name an agent wrote), and Slack
// is asked for no previews; the approval blocks share the same section.
func TestSlackMessage(t *testing.T) {
	text := Escape("wipe https://evil.example #general <!channel>")
	for name, msg := range map[string]map[string]any{
		"message":  SlackMessage(text),
		"approval": func() map[string]any { m := SlackMessage(text); m["blocks"] = ApprovalBlocks(text, "c1"); return m }(),
	} {
		b, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Text        string `json:"text"`
			UnfurlLinks *bool  `json:"unfurl_links"`
			UnfurlMedia *bool  `json:"unfurl_media"`
			Blocks      []struct {
				Type string `json:"type"`
				Text struct {
					Type     string `json:"type"`
					Text     string `json:"text"`
					Verbatim bool   `json:"verbatim"`
				} `json:"text"`
			} `json:"blocks"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.Text != text || got.UnfurlLinks == nil || *got.UnfurlLinks || got.UnfurlMedia == nil || *got.UnfurlMedia {
			t.Errorf("%s: text or previews: %s", name, b)
		}
		if len(got.Blocks) == 0 || got.Blocks[0].Type != "section" || got.Blocks[0].Text.Type != "mrkdwn" ||
			!got.Blocks[0].Text.Verbatim || got.Blocks[0].Text.Text != text || !strings.Contains(text, "&lt;!channel&gt;") {
			t.Errorf("%s: no verbatim section of the escaped text: %s", name, b)
		}
	}
}

// A long notice is shown whole, in as many sections as it takes, each cut
// on a character's boundary.
func TestSlackMessageLong(t *testing.T) {
	text := strings.Repeat("é", 4000) // 8,000 bytes
	blocks := SlackMessage(text)["blocks"].([]any)
	var whole strings.Builder
	for _, b := range blocks {
		s := b.(map[string]any)["text"].(map[string]any)["text"].(string)
		if len(s) > 2900 || !utf8.ValidString(s) {
			t.Fatalf("a section of %d bytes, valid UTF-8 %t", len(s), utf8.ValidString(s))
		}
		whole.WriteString(s)
	}
	if len(blocks) != 3 || whole.String() != text {
		t.Errorf("%d sections; whole text kept: %t", len(blocks), whole.String() == text)
	}
}
