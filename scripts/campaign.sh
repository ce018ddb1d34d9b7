#!/usr/bin/env bash
# The fault and attack campaign (issue 9): runs the crash, full-disk,
# read-only, locked-database, bucket-down, witness-garbage, partition, soak,
# secret-scan and hostile-input tests and the API refusal catalogue, then
# writes a short report of the figures to docs/campaign-report.md (or $1).
#
#   scripts/campaign.sh                      # CI-sized: 20 crashes, 20 s soak
#   ARX_CRASHES=100 ARX_SOAK_DURATION=10m scripts/campaign.sh   # the long variant, by hand
#
# Starts PostgreSQL and the S3 server the way CI does (.ci/setup-*.sh) when
# ARX_TEST_POSTGRES or ARX_TEST_VERSITYGW_BIN is not set, and then requires
# them. Needs root for the full-disk (tmpfs) and read-only (FUSE) tests.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/campaign-report.md}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ -z "${ARX_TEST_POSTGRES:-}" ]; then source .ci/setup-postgres.sh; fi
if [ -z "${ARX_TEST_VERSITYGW_BIN:-}" ]; then source .ci/setup-s3.sh; fi
export ARX_TEST_REQUIRE_SERVERS=1

attacks='TestBadInput|TestForgedCredentials|TestRefusalIsRecorded|TestFailClosed|TestApprovalRefusals|TestSelfApprovalRefused|TestApprovalTimeout|TestLoginRateLimited|TestTerminateUnderLoad|TestTokenGuessingIsRateLimited|TestDeeplyNestedBody|TestSlowClientTimesOut|TestGateway.*|TestCSRF.*|TestForged.*|TestSession.*'
faults='TestCrashSafety|TestDiskFull|TestReadOnly|TestFsyncFailed|TestDatabaseLocked|TestOutage|TestQuorum|TestWitnessGarbage|TestPartition.*|TestPublisherElection|TestLoginLimitAcrossReplicas|TestSoak|TestNoSecretLeaks'
status=0
go test -count=1 -v -run "$faults|$attacks" \
  ./internal/faults ./internal/api ./internal/console ./internal/publish/... ./internal/replicas >"$log" 2>&1 || status=$?

passed_cases=$(grep -cE '^\s*--- PASS: ('"$attacks"')' "$log" || true)
fault_tests=$(grep -cE '^\s*--- PASS: ('"$faults"')' "$log" || true)
failed_cases=$(grep -cE '^\s*--- FAIL' "$log" || true)
# field LINE KEY: the value of KEY in the first "CAMPAIGN LINE ..." log line.
field() { grep -o "CAMPAIGN $1 .*" "$log" | head -1 | grep -o " $2=[^ ]*" | cut -d= -f2 || true; }
# part SCENARIO MODE KEY: the same for a partition scenario and mode.
part() { grep -o "CAMPAIGN partition scenario=$1 .*" "$log" | grep -e "${2:+mode=$2 }" | head -1 | grep -o " $3=[^ ]*" | cut -d= -f2 || true; }

{
  echo "# Fault and attack campaign"
  echo
  echo "Written by \`scripts/campaign.sh\` on $(date -u +%Y-%m-%d) ($(nproc) CPUs, $(go version | awk '{print $3}'))."
  echo
  echo "| what | figure |"
  echo "|---|---|"
  echo "| attack and refusal cases run (test and sub-test cases passed) | $passed_cases |"
  echo "| fault tests passed | $fault_tests |"
  echo "| cases failed | $failed_cases |"
  echo "| SIGKILL crashes of arx serve under load, survived | $(field crash crashes) |"
  echo "| calls acknowledged during the crashes | $(field crash acknowledged_calls) |"
  echo "| record entries verified after the crashes | $(field crash entries_verified) |"
  echo "| full disk: refused with | $(field disk_full refused_with) (recovered without a restart: $(field disk_full recovered)) |"
  echo "| read-only data directory (FUSE): refused with | $(field read_only refused_with) (recovered without a restart in $(field read_only recovery_ms) ms) |"
  echo "| fsync fails (writes accepted): refused with | $(field fsync_failed refused_with), still refused after healing: $(field fsync_failed stays_failed), served again after a restart: $(field fsync_failed recovered_after_restart) |"
  echo "| database locked by another process: refused with | $(field db_locked refused_with) after $(field db_locked refuse_ms) ms (busy timeout $(field db_locked busy_timeout_ms) ms; recovered in $(field db_locked recovery_ms) ms) |"
  echo "| S3 bucket down under load: calls, entries | $(field bucket_down calls), $(field bucket_down entries) (all published once, in order, after it came back) |"
  echo "| witness answering garbage: modes, answers refused, bad checkpoints published | $(field witness_garbage modes), $(field witness_garbage refused), $(field witness_garbage published_bad) (recovered: $(field witness_garbage recovered)) |"
  echo "| replica cut off from PostgreSQL (reset / stall): longest wait for a refusal (s) | $(part replica reset refuse_max_s) / $(part replica stall refuse_max_s) |"
  echo "| replica cut off from PostgreSQL (reset / stall): recovered after heal (s) | $(part replica reset recover_s) / $(part replica stall recover_s) |"
  echo "| terminated during a partition: requests honoured after heal | $(part terminate reset upstream_after) / $(part terminate stall upstream_after) |"
  echo "| sequencing replica stalled mid-transaction: others resumed after (s) | $(part sequencer '' resume_s) (lock released after $(part sequencer '' lock_released_s) s) |"
  echo "| publishing replica killed (SIGKILL) under load: another publishes after (ms) | $(field publisher takeover_ms) ($(field publisher acknowledged) calls acknowledged, all in the bucket) |"
  echo "| secret scan: kinds, secrets, places, bytes scanned, leaks | $(field secrets kinds), $(field secrets secrets), $(field secrets places_scanned), $(field secrets bytes_scanned), $(field secrets leaks) |"
  echo "| soak: agents, duration, calls | $(field soak agents), $(field soak duration), $(field soak calls) |"
  echo "| soak: p99 of a governed call (ms) | $(field soak p99_ms) |"
  echo "| soak: resident memory samples (KiB) | $(grep -o 'CAMPAIGN soak .*' "$log" | head -1 | grep -o 'rss_kib=\[[^]]*\]' | cut -d= -f2) |"
  echo "| acknowledged entries lost (crash, full disk, read-only, fsync failed, locked, bucket down, publisher killed, soak) | $(field crash lost) / $(field disk_full lost) / $(field read_only lost) / $(field fsync_failed lost) / $(field db_locked lost) / $(field bucket_down lost) / $(field publisher lost) / $(field soak lost) |"
  echo
  echo "The cases are the tests named in SECURITY.md; each asserts the stable"
  echo "refusal code and that nothing but the record of a refusal was written."
  [ -z "$(field disk_full recovered)" ] && echo && echo "The full-disk test did not run (it needs root to mount a tmpfs)."
  true
} >"$out"
cat "$out"
if [ "$status" -ne 0 ]; then
  keep=$(mktemp /tmp/arx-campaign.XXXXXX.log)
  cp "$log" "$keep"
  echo; echo "campaign: some tests failed (whole log: $keep):"; grep -E -B5 -- '--- FAIL|FAIL\s' "$log" | head -60
fi
exit "$status"
