// Package agentvault is the Go SDK of ARX. It sends every governed action
// of an agent through the ARX runtime, which checks the action against the
// agent's manifest, pauses it for a named approver when it is risky, issues a
// credential that lives for this one call, and appends the call to the
// agent's hash-chained personnel record.
//
// Make one Client at process start, from the environment:
//
//	arx, err := agentvault.FromEnv() // reads ARX_TOKEN, ARX_BASE_URL, ...
//	if err != nil {
//		log.Fatal(err)
//	}
//
// Then wrap each piece of work that touches a system of record in Do. The
// function runs only after ARX has issued the credential (and, for a
// high-risk call, after an approver has said yes); the credential is good for
// this call only, and dies when the function returns:
//
//	func fetchAccount(ctx context.Context, arx *agentvault.Client, accountID string) (Account, error) {
//		return agentvault.Do(ctx, arx, agentvault.Action{
//			Connector: "salesforce",
//			Action:    "account.read",
//			Risk:      agentvault.RiskLow,
//			Summary:   "account " + accountID,
//		}, func(ctx context.Context, cred agentvault.Credential) (Account, error) {
//			req, err := http.NewRequestWithContext(ctx, "GET", "https://api.salesforce.com/v1/accounts/"+accountID, nil)
//			if err != nil {
//				return Account{}, err
//			}
//			cred.SetAuthHeader(req)
//			resp, err := http.DefaultClient.Do(req)
//			...
//		})
//	}
//
// A connector that is not on the manifest, a denied approval or a terminated
// agent ends Do with an *Error that carries the server's stable code (listed
// in package arxerr); the function is then not run:
//
//	if agentvault.IsCode(err, arxerr.ConnectorNotDeclared) { ... }
//
// # Promises
//
//   - A request is retried only with its idempotency key, so it never makes
//     two calls.
//   - Do completes every call it was granted or left waiting for approval:
//     with "success", "error" (also after a panic) or "cancelled". When the
//     completion cannot be sent, Do says so in its error.
//   - The agent's token and the call's credential appear in no error
//     message and no log line; printing or encoding a Credential, a Call or
//     a Config redacts them.
//   - A Client is safe for concurrent use; share one per process.
//
// # Environment
//
//	ARX_TOKEN             the agent's bearer token, shown when it was hired
//	ARX_BASE_URL          the agent API; default https://api.arxsec.io/v1
//	ARX_AGENT_ID          the hired agent's id
//	ARX_LOCAL_RECORD_DIR  local-only mode's record directory; default arx-records
//	ARX_LOCAL_MODE        1 for local-only mode
//
// Local-only mode (ARX_LOCAL_MODE=1) will check the manifest and keep the
// record in local JSONL files, without a server. It is not available in this
// build yet: every call then fails with an error that says so.
package agentvault
