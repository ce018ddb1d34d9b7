package manifest_test

import (
	"fmt"

	"github.com/arxsec/arx/manifest"
)

func ExampleParse() {
	m, err := manifest.Parse([]byte(`
apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: sales-research
  owner: dana@example.com
scope:
  connectors:
    salesforce:
      actions:
        account.read:
          risk: low
        account.update:
          risk: high
          max_duration: 30s
approval:
  approvers: [dana@example.com]
budget:
  max_call_duration: 2m
termination:
  notify: [dana@example.com]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	a, _ := m.Action("salesforce", "account.update")
	_, declared := m.Connector("hubspot")
	fmt.Println(a.Risk, m.CallTTL("salesforce", "account.update"), m.CallTTL("salesforce", "account.read"))
	fmt.Println(m.IsApprover("Dana@Example.com"), declared, m.Approval.Timeout, m.OnDrift)
	// Output:
	// high 30s 2m0s
	// true false 15m0s record
}

func ExampleError() {
	_, err := manifest.Parse([]byte(`apiVersion: arx.dev/v1
kind: JobDescription
agent:
  name: sales-research
  owner: dana
scope:
  connectors:
    salesforce:
      actions:
        account.read:
          risk: extreme
termination:
  notify: []
  revoke: [hubspot]
approval:
  approvers: [dana@example.com]
budget:
  calls_per_day: 500
`))
	fmt.Println(err)
	// Output:
	// manifest:5: agent.owner: "dana" is not an email address (hint: write a plain address such as dana@example.com)
	// manifest:11: scope.connectors["salesforce"].actions["account.read"].risk: unknown risk "extreme" (hint: use low, medium or high)
	// manifest:14: termination.revoke[0]: connector "hubspot" is not declared in scope.connectors (hint: declare it in scope.connectors or remove it from revoke)
	// manifest:17: budget.max_call_duration: required field is missing (hint: add max_call_duration (e.g. 2m): how long a call's credential lives, unless the action sets max_duration)
}
