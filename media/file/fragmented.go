package file

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/pmp4"
)

// maxFragmentSize bounds what is read into memory at once from a
// fragmented MP4: the init segment, or one moof+mdat pair.
const maxFragmentSize = 64 << 20

// unmarshalFragmented reads a fragmented MP4 into the same track model as
// a progressive one. Fragments are parsed one at a time and only the
// sample tables are kept: payloads are read again from the file, by
// offset, when played.
func unmarshalFragmented(r io.ReadSeeker, lay layout) (tracks []*pmp4.Track, err error) {
	defer func() {
		// Third-party parser on untrusted input: never let it panic.
		if v := recover(); v != nil {
			tracks, err = nil, fmt.Errorf("parser panic: %v", v)
		}
	}()
	var moovEnd int64 = -1
	for _, b := range lay.top {
		if b.typ == "moov" {
			moovEnd = b.end
			break
		}
	}
	if moovEnd < 0 {
		return nil, errors.New("no moov box")
	}
	head, err := readRange(r, 0, moovEnd)
	if err != nil {
		return nil, err
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(head)); err != nil {
		return nil, fmt.Errorf("init segment: %w", err)
	}
	byID := map[int]*pmp4.Track{}
	for _, it := range init.Tracks {
		if it.TimeScale == 0 {
			continue
		}
		t := &pmp4.Track{ID: it.ID, TimeScale: it.TimeScale, Codec: it.Codec}
		byID[it.ID] = t
		tracks = append(tracks, t)
	}
	if len(tracks) == 0 {
		return nil, errors.New("no tracks found")
	}

	for i, b := range lay.top {
		if b.typ != "moof" {
			continue
		}
		// A fragment is a moof and the mdat after it.
		if i+1 >= len(lay.top) || lay.top[i+1].typ != "mdat" {
			return nil, fmt.Errorf("moof at %d without mdat", b.off)
		}
		fragOff, fragEnd := b.off, lay.top[i+1].end
		frag, err := readRange(r, fragOff, fragEnd)
		if err != nil {
			return nil, err
		}
		var parts fmp4.Parts
		if err := parts.Unmarshal(frag); err != nil {
			return nil, fmt.Errorf("fragment at %d: %w", fragOff, err)
		}
		for _, part := range parts {
			for _, pt := range part.Tracks {
				t := byID[pt.ID]
				if t == nil {
					continue
				}
				for _, s := range pt.Samples {
					// Payload is a subslice of frag: its capacity gives its offset.
					off := fragOff + int64(cap(frag)-cap(s.Payload))
					t.Samples = append(t.Samples, &pmp4.Sample{
						Duration:        s.Duration,
						PTSOffset:       s.PTSOffset,
						IsNonSyncSample: s.IsNonSyncSample,
						PayloadSize:     uint32(len(s.Payload)),
						GetPayload:      payloadAt(r, off, len(s.Payload)),
					})
				}
			}
		}
	}
	return tracks, nil
}

func payloadAt(r io.ReadSeeker, off int64, n int) func() ([]byte, error) {
	return func() ([]byte, error) { return readRange(r, off, off+int64(n)) }
}

func readRange(r io.ReadSeeker, from, to int64) ([]byte, error) {
	if to < from || to-from > maxFragmentSize {
		return nil, fmt.Errorf("range of %d bytes at %d too large", to-from, from)
	}
	b := make([]byte, to-from)
	if err := readAt(r, from, b); err != nil {
		return nil, err
	}
	return b, nil
}
