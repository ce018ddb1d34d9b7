// Package thirdparty has no code: its tests check ARX's log with other
// projects' tools, run as their users run them, over HTTP and the bucket:
//
//   - litewitness (filippo.io/torchwood), signing through ssh-agent, is a
//     witness of a running ARX: it cosigns what ARX publishes, and
//     `arx audit verify --witness-url` asks it and catches a rollback;
//   - Tessera's fsck (github.com/transparency-dev/tessera) checks ARX's
//     bucket, and every checkpoint ARX published into it;
//   - a log written by Tessera (its posix-oneshot example) is cosigned by
//     `arx witness serve`.
//
// .ci/setup-tlog-tools.sh builds the tools from the Go module proxy and
// exports their paths; without them the tests skip (fail in CI).
package thirdparty
