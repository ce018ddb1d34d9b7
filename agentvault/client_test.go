package agentvault

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Config // compared field by field, HTTPClient and Logger aside
		wantErr string // substring of the error
	}{
		{
			name: "defaults",
			env:  map[string]string{"ARX_TOKEN": "tok"},
			want: Config{Token: "tok", BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records"},
		},
		{
			name: "everything set",
			env: map[string]string{"ARX_TOKEN": " tok\n", "ARX_BASE_URL": "http://127.0.0.1:8080/v1/", "ARX_AGENT_ID": "9a1d",
				"ARX_LOCAL_RECORD_DIR": "/tmp/rec", "ARX_LOCAL_MODE": "0"},
			want: Config{Token: "tok", BaseURL: "http://127.0.0.1:8080/v1/", AgentID: "9a1d", LocalRecordDir: "/tmp/rec"},
		},
		{name: "local mode 1", env: map[string]string{"ARX_LOCAL_MODE": "1"}, want: Config{BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records", LocalMode: true}},
		{name: "local mode TRUE", env: map[string]string{"ARX_LOCAL_MODE": "TRUE"}, want: Config{BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records", LocalMode: true}},
		{name: "local mode Yes", env: map[string]string{"ARX_LOCAL_MODE": "Yes"}, want: Config{BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records", LocalMode: true}},
		{name: "local mode on", env: map[string]string{"ARX_LOCAL_MODE": "on"}, want: Config{BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records", LocalMode: true}},
		{name: "local mode off", env: map[string]string{"ARX_TOKEN": "tok", "ARX_LOCAL_MODE": "OFF"}, want: Config{Token: "tok", BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records"}},
		{name: "local mode no", env: map[string]string{"ARX_TOKEN": "tok", "ARX_LOCAL_MODE": "no"}, want: Config{Token: "tok", BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records"}},
		{name: "local mode false", env: map[string]string{"ARX_TOKEN": "tok", "ARX_LOCAL_MODE": "false"}, want: Config{Token: "tok", BaseURL: DefaultBaseURL, LocalRecordDir: "arx-records"}},
		{name: "bad local mode", env: map[string]string{"ARX_TOKEN": "tok", "ARX_LOCAL_MODE": "maybe"}, wantErr: "ARX_LOCAL_MODE"},
		{name: "missing token", env: map[string]string{}, wantErr: "ARX_TOKEN"},
		{name: "relative URL", env: map[string]string{"ARX_TOKEN": "tok", "ARX_BASE_URL": "api.arxsec.io/v1"}, wantErr: "ARX_BASE_URL"},
		{name: "ftp URL", env: map[string]string{"ARX_TOKEN": "tok", "ARX_BASE_URL": "ftp://api.arxsec.io/v1"}, wantErr: "ARX_BASE_URL"},
		{name: "not a URL", env: map[string]string{"ARX_TOKEN": "tok", "ARX_BASE_URL": "http://[::1"}, wantErr: "ARX_BASE_URL"},
		{name: "URL with query", env: map[string]string{"ARX_TOKEN": "tok", "ARX_BASE_URL": "https://x/v1?a=b"}, wantErr: "ARX_BASE_URL"},
		{name: "token with space", env: map[string]string{"ARX_TOKEN": "to k"}, wantErr: "ARX_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"ARX_TOKEN", "ARX_BASE_URL", "ARX_AGENT_ID", "ARX_LOCAL_RECORD_DIR", "ARX_LOCAL_MODE"} {
				t.Setenv(k, tc.env[k])
			}
			c, err := FromEnv()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FromEnv() error = %v, want one naming %s", err, tc.wantErr)
				}
				if msg := err.Error(); strings.ToLower(msg[:1]) != msg[:1] || strings.HasSuffix(msg, ".") {
					t.Errorf("error %q: want lowercase, no trailing period", msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromEnv(): %v", err)
			}
			cfg, err := ConfigFromEnv()
			if err != nil {
				t.Fatal(err)
			}
			cfg.HTTPClient, cfg.Logger = nil, nil
			if cfg != tc.want {
				t.Errorf("ConfigFromEnv() = %+v, want %+v", cfg, tc.want)
			}
			if got, want := c.baseURL, strings.TrimRight(tc.want.BaseURL, "/"); got != want {
				t.Errorf("base URL %q, want %q", got, want)
			}
			if c.AgentID() != tc.want.AgentID || c.localMode != tc.want.LocalMode {
				t.Errorf("client agent %q local %t, want %q %t", c.AgentID(), c.localMode, tc.want.AgentID, tc.want.LocalMode)
			}
		})
	}
}

func TestNewKeepsCredentialsOutOfErrors(t *testing.T) {
	_, err := New(Config{Token: "tok", BaseURL: "https://user:hunter2@api.arxsec.io/v1"})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "ARX_BASE_URL") {
		t.Fatalf("New() error = %v, want one naming ARX_BASE_URL without the password", err)
	}
	_, err = New(Config{Token: "secret\r\nX-Evil: 1"})
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("New() error = %v, want one without the token", err)
	}
}

func TestNewDefaults(t *testing.T) {
	c, err := New(Config{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	if c.baseURL != DefaultBaseURL || c.localDir != DefaultLocalRecordDir || c.wait != 30*time.Second {
		t.Errorf("defaults: base %q dir %q wait %s", c.baseURL, c.localDir, c.wait)
	}
	tr, ok := c.hc.Transport.(*http.Transport)
	if !ok || tr.MaxIdleConnsPerHost < 64 || c.hc.Timeout != 0 {
		t.Errorf("default HTTP client: %#v, want a pooled transport and no overall timeout (long polls)", c.hc)
	}
	if c.hc.CheckRedirect == nil {
		t.Error("default HTTP client follows redirects; the token must go only to ARX_BASE_URL")
	}

	// A caller's client with a short timeout gets shorter long polls.
	c, err = New(Config{Token: "tok", HTTPClient: &http.Client{Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if c.wait != 5*time.Second {
		t.Errorf("wait = %s with a 10s client timeout, want 5s", c.wait)
	}
}
