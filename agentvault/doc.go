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
//	ARX_LOCAL_RECORD_DIR  local records (local-only mode, unreachable server); default arx-records
//	ARX_LOCAL_MODE        1 for local-only mode
//	ARX_MANIFEST          local-only mode's manifest; default manifests/job_description.yaml
//	ARX_LOCAL_APPROVE     local-only mode's approvals: prompt (default), allow or deny
//
// # Local-only mode
//
// With ARX_LOCAL_MODE=1 there is no server: the SDK checks each call against
// the manifest by the runtime's own rules (manifest.Decide), and appends the
// entries the runtime would append, hash-chained, to
// ARX_LOCAL_RECORD_DIR/<agent name>.jsonl. A connector not on the manifest is
// refused (and recorded); a call that needs an approver is decided as
// ARX_LOCAL_APPROVE says, and the decision is recorded as a local one. The
// credential is a stub starting with "local.". `arx record verify DIR`
// verifies the files and `arx manifest check MANIFEST --records DIR`
// compares them with the manifest.
//
// Outside local-only mode, a call that cannot reach the server fails closed
// (an error wrapping ErrUnreachable), and the attempt is recorded in the same
// directory, for `arx record import`.
package agentvault
