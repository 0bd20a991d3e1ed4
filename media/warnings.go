package media

import "sync"

// WarningSet holds the warnings of a source's latest run (an audio codec
// dropped, audio transcoded, a fallback used). Embedding it implements
// Warner. Safe for concurrent use; the zero value is empty.
type WarningSet struct {
	mu   sync.Mutex
	list []string
}

// Warnings returns a copy of the current warnings.
func (w *WarningSet) Warnings() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.list...)
}

// SetWarnings replaces the warnings (each run sets its own).
func (w *WarningSet) SetWarnings(list []string) {
	w.mu.Lock()
	w.list = list
	w.mu.Unlock()
}

var _ Warner = (*WarningSet)(nil)
