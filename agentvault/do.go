package agentvault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/arxsec/arx/record"
)

// completeTimeout bounds the completion of a call whose context is already
// done.
const completeTimeout = 5 * time.Second

// Do makes one governed call. It asks ARX for the call described by a, waits
// for a named approver when the call needs one, runs fn with the call's
// credential, completes the call with fn's outcome (which kills the
// credential) and returns fn's result.
//
// One idempotency key (a.IdempotencyKey, or a new UUIDv4) covers every retry
// of the request, so a retry never makes a second call.
//
// fn runs only once the call is approved. Its context ends when the
// credential expires or ctx is done. The call is completed as
//   - "success" when fn returns a nil error;
//   - "cancelled" when fn fails after ctx is done, or when ctx ends while
//     the call waits for approval (the request is then withdrawn and fn
//     never runs);
//   - "error" otherwise, with fn's error message cut to 1 KiB and with the
//     credential and the agent's token removed from it;
//   - "error" with "panic: <value>" when fn panics; Do then panics again
//     with the same value.
//
// The completion is sent even when ctx is done: detached from ctx's
// cancellation, within 5 seconds if ctx has already ended. If it fails, Do still returns fn's result, with the completion
// error joined (errors.Join) to fn's error: the record may then lack the
// call's completion, and the credential lives until it expires.
//
// A refusal (a connector not on the manifest, a denied approval, a
// terminated agent, ...) is an *Error carrying the server's code and, when
// the refusal was recorded, its CallID; fn is not run.
func Do[T any](ctx context.Context, c *Client, a Action, fn func(ctx context.Context, cred Credential) (T, error)) (_ T, err error) {
	var zero T
	if c == nil {
		return zero, errNoClient
	}
	if fn == nil {
		return zero, errors.New("agentvault: Do needs a function to run")
	}
	if a.IdempotencyKey == "" {
		a.IdempotencyKey = newUUID()
	}
	ctx, end := startCallSpan(ctx, a)
	defer func() { end(err) }()
	call, err := c.Request(ctx, a)
	if err != nil {
		return zero, err
	}
	if call.Status == statusPending {
		c.log.LogAttrs(ctx, slog.LevelDebug, "arx: waiting for approval", slog.String("call", call.ID))
		approved, err := c.Wait(ctx, call.ID)
		if err != nil {
			if approved == nil && ctx.Err() != nil {
				// Withdraw the request: no approver should decide on
				// work that will not be done.
				cerr := c.finish(ctx, call.ID, "", Outcome{Outcome: outcomeCancelled, Error: "cancelled while waiting for approval: " + ctx.Err().Error()})
				return zero, errors.Join(err, cerr)
			}
			return zero, err
		}
		call = approved
	} else if err := decided(call); err != nil {
		return zero, err
	}
	cred := *call.Credential
	if err := ctx.Err(); err != nil {
		cerr := c.finish(ctx, call.ID, cred.Token, Outcome{Outcome: outcomeCancelled, Error: "cancelled before the work started: " + err.Error()})
		return zero, errors.Join(fmt.Errorf("agentvault: call %s: %w", call.ID, err), cerr)
	}
	return run(ctx, c, cred, fn)
}

// usageKey carries, in the context Do gives fn, where ReportUsage adds up.
type usageKey struct{}

type usageBox struct {
	mu     sync.Mutex
	usage  Usage
	amount int64 // millionths, in currency
	cur    string
	set    bool
}

// ReportUsage adds what the governed call running in ctx used (tokens,
// and an amount such as "0.013 USD") to what Do reports when it completes
// the call; ARX charges it to the agent's daily caps (budget.tokens,
// budget.spend). Call it from the function Do runs, with the context Do
// gave it, as often as the work spends (each model call, say). Outside
// Do's function it returns an error and reports nothing.
func ReportUsage(ctx context.Context, u Usage) error {
	b, _ := ctx.Value(usageKey{}).(*usageBox)
	if b == nil {
		return errors.New("agentvault: ReportUsage outside a governed call (call it with the context Do gives your function)")
	}
	if u.Tokens < 0 {
		return fmt.Errorf("agentvault: usage of %d tokens is negative", u.Tokens)
	}
	var m record.Money
	if u.Amount != "" {
		var err error
		if m, err = record.ParseMoney(u.Amount); err != nil {
			return fmt.Errorf("agentvault: usage amount: %w", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if u.Amount != "" {
		if b.cur != "" && b.cur != m.Currency {
			return fmt.Errorf("agentvault: usage amount in %s after amounts in %s", m.Currency, b.cur)
		}
		b.cur, b.amount = m.Currency, min(b.amount+m.Micros, record.MaxMoney) // each is at most MaxMoney: no wrap
		b.usage.Amount = record.Money{Micros: b.amount, Currency: b.cur}.String()
	}
	b.usage.Tokens = min(b.usage.Tokens+min(u.Tokens, 1<<50), 1<<50)
	b.set = true
	return nil
}

func (b *usageBox) reported() *Usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.set {
		return nil
	}
	u := b.usage
	return &u
}

// run runs fn under the credential's deadline and completes the call with
// its outcome, also when fn panics or exits its goroutine.
func run[T any](ctx context.Context, c *Client, cred Credential, fn func(context.Context, Credential) (T, error)) (T, error) {
	var fctx context.Context
	var cancel context.CancelFunc
	if cred.ExpiresAt.IsZero() {
		fctx, cancel = context.WithCancel(ctx)
	} else {
		fctx, cancel = context.WithDeadline(ctx, cred.ExpiresAt)
	}
	defer cancel()
	box := &usageBox{}
	fctx = context.WithValue(fctx, usageKey{}, box)
	start := time.Now()
	returned := false
	defer func() {
		if returned {
			return
		}
		r := recover()
		msg := "the function did not return (runtime.Goexit)"
		if r != nil {
			msg = fmt.Sprintf("panic: %v", r)
		}
		_ = c.finish(ctx, cred.CallID, cred.Token, Outcome{Outcome: outcomeError, Error: msg, Duration: time.Since(start), Usage: box.reported()})
		if r != nil {
			panic(r)
		}
	}()
	res, err := fn(fctx, cred)
	returned = true
	o := Outcome{Outcome: outcomeSuccess, Duration: time.Since(start), Usage: box.reported()}
	if err != nil {
		o.Outcome, o.Error = outcomeError, err.Error()
		if ctx.Err() != nil {
			o.Outcome = outcomeCancelled
		}
	}
	if cerr := c.finish(ctx, cred.CallID, cred.Token, o); cerr != nil {
		return res, errors.Join(err, cerr)
	}
	return res, err
}

// finish completes a call on behalf of Do, detached from ctx's cancellation
// so that the record gets the completion even after ctx ends. secret, the
// call's credential, is removed from the outcome's message.
func (c *Client) finish(ctx context.Context, callID, secret string, o Outcome) error {
	if secret != "" {
		o.Error = strings.ReplaceAll(o.Error, secret, redacted)
		o.Error = scrubDSN(o.Error) // gateway.go
	}
	timeout := c.attemptTimeout
	if ctx.Err() != nil {
		timeout = completeTimeout
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if _, err := c.Complete(cctx, callID, o); err != nil {
		c.log.LogAttrs(ctx, slog.LevelWarn, "arx: completing call failed; the record may lack its completion",
			slog.String("call", callID), slog.String("outcome", o.Outcome), slog.String("error", err.Error()))
		return fmt.Errorf("agentvault: completing call %s with %q: %w", callID, o.Outcome, err)
	}
	return nil
}
