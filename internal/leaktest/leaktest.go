// Package leaktest checks that a test leaves no goroutine behind: it
// records the goroutines running when the check is armed and, when the
// test ends, compares the stacks still running against them (goleak),
// retrying for a while so goroutines that are already ending can finish.
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// Check arms the check for t: at the end of t (after the cleanups
// registered after Check, which run first) any goroutine that was not
// running when Check was called fails the test with its stack. Call it
// first in a test, before starting anything. Tests using it must not run
// in parallel with others in the same package.
func Check(t testing.TB, ignore ...goleak.Option) {
	t.Helper()
	opts := append([]goleak.Option{goleak.IgnoreCurrent()}, ignore...)
	t.Cleanup(func() {
		if t.Failed() {
			return // the failure is what matters; leaks follow from it
		}
		if err := goleak.Find(opts...); err != nil {
			t.Errorf("goroutines left behind: %v", err)
		}
	})
}
