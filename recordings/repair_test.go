package recordings

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/icey/icey-server/internal/leaktest"
)

// testSPS and testPPS describe 320x240 Constrained Baseline H.264.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x20}
	testPPS = []byte{0x68, 0xcb, 0x83, 0xcb, 0x20}
)

// testInit and testPart are a real init segment and fragment.
func testInit(tb testing.TB) []byte {
	tb.Helper()
	var b seekablebuffer.Buffer
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{
		{ID: 1, TimeScale: videoTimescale, Codec: &codecs.H264{SPS: testSPS, PPS: testPPS}},
		{ID: 2, TimeScale: opusTimescale, Codec: &codecs.Opus{ChannelCount: 2}},
	}}
	if err := init.Marshal(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func testPart(tb testing.TB, seq uint32) []byte {
	tb.Helper()
	var b seekablebuffer.Buffer
	p := fmp4.Part{SequenceNumber: seq, Tracks: []*fmp4.PartTrack{
		{ID: 1, BaseTime: uint64(seq) * 3000, Samples: []*fmp4.Sample{{Duration: 3000, Payload: []byte{0, 0, 0, 2, 0x65, 0x88}}}},
		{ID: 2, BaseTime: uint64(seq) * 960, Samples: []*fmp4.Sample{{Duration: 960, Payload: []byte{0xfc, 1, 2}}}},
	}}
	if err := p.Marshal(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func repairFile(t *testing.T, data []byte) ([]byte, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x"+PartExt)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	err := RepairPart(p)
	got, rerr := os.ReadFile(p)
	if rerr != nil {
		t.Fatal(rerr)
	}
	return got, err
}

func TestRepairPart(t *testing.T) {
	leaktest.Check(t)
	init, p1, p2 := testInit(t), testPart(t, 1), testPart(t, 2)
	free := []byte{0, 0, 0, 8, 'f', 'r', 'e', 'e'}
	// A 64-bit-size mdat after a moof.
	large := cat(testPart(t, 3))
	moofSize := int(binary.BigEndian.Uint32(large))
	mdat := large[moofSize:]
	mdat64 := cat([]byte{0, 0, 0, 1, 'm', 'd', 'a', 't'}, binary.BigEndian.AppendUint64(nil, uint64(len(mdat)+8)), mdat[8:])
	p3large := cat(large[:moofSize], mdat64)

	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{"complete", cat(init, p1, p2), cat(init, p1, p2), nil},
		{"init only", init, init, nil},
		{"torn mdat", cat(init, p1, p2[:len(p2)-3]), cat(init, p1), nil},
		{"torn moof", cat(init, p1, p2[:20]), cat(init, p1), nil},
		{"moof without mdat", cat(init, p1, p2[:moofSize]), cat(init, p1), nil},
		{"torn header", cat(init, p1, p2[:5]), cat(init, p1), nil},
		{"64-bit mdat", cat(init, p1, p3large), cat(init, p1, p3large), nil},
		{"torn 64-bit mdat", cat(init, p1, p3large[:len(p3large)-1]), cat(init, p1), nil},
		{"free boxes kept", cat(init[:32], free, init[32:], p1, free, p2), cat(init[:32], free, init[32:], p1, free, p2), nil},
		{"trailing free dropped", cat(init, p1, free), cat(init, p1), nil},
		{"zeros after", cat(init, p1, make([]byte, 4096)), cat(init, p1), nil},
		{"size 0 box", cat(init, p1, []byte{0, 0, 0, 0, 'm', 'o', 'o', 'f'}, p2), cat(init, p1), nil},
		{"second moov", cat(init, p1, init, p2), cat(init, p1), nil},
		{"empty", nil, nil, ErrNoInit},
		{"torn moov", init[:len(init)-1], init[:len(init)-1], ErrNoInit},
		{"no ftyp", cat(init[32:], p1), cat(init[32:], p1), ErrNoInit},
		{"fragment before moov", cat(init[:32], p1, init[32:]), cat(init[:32], p1, init[32:]), ErrNoInit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "free boxes kept" || tc.name == "fragment before moov" || tc.name == "no ftyp" {
				// init[:32] is the ftyp mediacommon writes.
				if string(init[4:8]) != "ftyp" || binary.BigEndian.Uint32(init) != 32 {
					t.Fatalf("ftyp is %d bytes", binary.BigEndian.Uint32(init))
				}
			}
			got, err := repairFile(t, tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if string(got) != string(tc.want) {
				t.Errorf("repaired to %d bytes, want %d", len(got), len(tc.want))
			}
		})
	}
}

func TestRepairPartMissing(t *testing.T) {
	leaktest.Check(t)
	if err := RepairPart(filepath.Join(t.TempDir(), "none"+PartExt)); err == nil || errors.Is(err, ErrNoInit) {
		t.Errorf("err %v", err)
	}
}
