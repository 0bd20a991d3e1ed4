package recordings

import (
	"errors"
	"testing"
)

// FuzzRepair feeds arbitrary bytes to the box scanner behind RepairPart:
// it must never panic nor read past the file, must keep a prefix that
// starts with an init segment, and must be idempotent (the repaired file
// repairs to itself).
func FuzzRepair(f *testing.F) {
	init, p1, p2 := testInit(f), testPart(f, 1), testPart(f, 2)
	f.Add(cat(init, p1, p2))
	f.Add(cat(init, p1, p2[:len(p2)/2]))
	f.Add(cat(init[:32], []byte{0, 0, 0, 1, 'm', 'o', 'o', 'v', 0, 0, 0, 0, 0, 0, 0, 16}, p1))
	f.Add(cat(init, []byte{0, 0, 0, 1, 'm', 'o', 'o', 'f', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))
	f.Add(cat(init, []byte{0, 0, 0, 1, 'm', 'o', 'o', 'f', 0x80, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(init[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		end, err := repairEnd(bytesReaderAt(data), size)
		if err != nil {
			if !errors.Is(err, ErrNoInit) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if end < 16 || end > size {
			t.Fatalf("end %d of %d bytes", end, size)
		}
		if string(data[4:8]) != "ftyp" {
			t.Fatalf("kept a file not starting with ftyp")
		}
		again, err := repairEnd(bytesReaderAt(data[:end]), end)
		if err != nil || again != end {
			t.Fatalf("not idempotent: %d -> %d, %v", end, again, err)
		}
	})
}
