package manifest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
)

// Conditions on a call's arguments: an action may say `when:` with a CEL
// expression over `args` (the call's arguments, a JSON object) that must
// hold, and `otherwise:` what happens when it does not. CEL is the
// language Kubernetes admission policies use (cel.dev/cel-go): no loops,
// no side effects, a bounded cost.

// What happens to a call whose arguments do not meet its action's
// condition.
const (
	OtherwiseRefuse          = "refuse"           // refused: manifest.condition_not_met
	OtherwiseRequireApproval = "require_approval" // held for a named approver
	OtherwiseDrift           = "drift"            // drift (condition_not_met), handled as on_drift says
)

// DriftConditionNotMet is the drift rule of a call whose arguments do not
// meet its action's condition under otherwise: drift.
const DriftConditionNotMet = "condition_not_met"

// Limits of a condition.
const (
	MaxConditionLength = 2048
	// ConditionCostLimit bounds the work of one evaluation (CEL's cost
	// units: about one per operation and element visited).
	ConditionCostLimit = 10_000
	// ConditionTimeout bounds the time of one evaluation.
	ConditionTimeout = 10 * time.Millisecond
)

// Condition is a compiled `when:`.
type Condition struct {
	Expr      string `json:"expr"`
	Otherwise string `json:"otherwise"`
	prg       cel.Program
}

var conditionEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)), cel.CrossTypeNumericComparisons(true))
})

// compileCondition type-checks expr: it must be a CEL expression of type
// bool over args.
func compileCondition(expr string) (cel.Program, error) {
	if len(expr) > MaxConditionLength {
		return nil, fmt.Errorf("the condition is longer than %d characters", MaxConditionLength)
	}
	env, err := conditionEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, errors.New(celMessage(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("the condition is of type %s, not bool", ast.OutputType())
	}
	return env.Program(ast, cel.CostLimit(ConditionCostLimit), cel.InterruptCheckFrequency(64))
}

// celMessage is the first problem CEL reports, its place as a column:
// "ERROR: <input>:1:16: Syntax error: ..." is "column 16: Syntax error: ...".
func celMessage(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	line = strings.TrimPrefix(line, "ERROR: ")
	if rest, ok := strings.CutPrefix(line, "<input>:"); ok {
		if pos, msg, ok := strings.Cut(rest, ": "); ok {
			if _, col, ok := strings.Cut(pos, ":"); ok {
				return "column " + col + ": " + msg
			}
		}
	}
	return line
}

// Holds evaluates the condition on a call's arguments (nil: none). An
// error (a missing key, a wrong type, the cost or time limit) fails
// closed: the condition does not hold, and the error says why.
func (c *Condition) Holds(args map[string]any) (bool, error) {
	if args == nil {
		args = map[string]any{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ConditionTimeout)
	defer cancel()
	out, _, err := c.prg.ContextEval(ctx, map[string]any{"args": args})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("the condition gave %v, not true or false", out.Value())
	}
	return b, nil
}

// Condition returns the condition of an action, nil when it has none.
func (m *Manifest) Condition(connector, action string) *Condition {
	a, ok := m.Action(connector, action)
	if !ok {
		return nil
	}
	return a.When
}
