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

// DemuxAudioWarnings are the warnings of a demuxer (MPEG-TS, fragmented
// MP4) about the audio it does not pass through as it is: each dropped
// track by its codec type's name, and AAC transcoded to Opus.
func DemuxAudioWarnings(dropped []string, aac bool) []string {
	var out []string
	for _, name := range dropped {
		out = append(out, "audio "+name+" dropped: only Opus is passed through (AAC is transcoded when ffmpeg is installed)")
	}
	if aac {
		out = append(out, "audio AAC is transcoded to Opus with ffmpeg")
	}
	return out
}

// ReportWarnings hands a run's warnings to onTracks (if set) and logs each.
func ReportWarnings(log interface{ Warn(string, ...any) }, onTracks func([]string), warnings []string) {
	if onTracks != nil {
		onTracks(warnings)
	}
	for _, w := range warnings {
		log.Warn(w)
	}
}
