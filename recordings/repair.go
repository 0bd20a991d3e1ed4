package recordings

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNoInit is returned by RepairPart for a file without a complete init
// segment (ftyp and moov): nothing in it is playable.
var ErrNoInit = errors.New("recordings: no complete init segment")

// RepairPart repairs a .part file left by a crash: it scans the top-level
// MP4 boxes (32- and 64-bit sizes), keeps the init segment (ftyp, moov)
// and every complete moof+mdat pair, and truncates the file after the last
// complete pair (a torn fragment, or anything unreadable after it, goes).
// The file is not renamed: that is the Store's business.
//
// On error the file is left as it was. For ErrNoInit the caller should
// remove it: the recorder writes the init segment before any media, so
// such a file holds at most a torn init segment and nothing playable. For
// any other error (the file cannot be read or truncated) the caller should
// keep it aside, still as .part, for a later attempt or inspection.
func RepairPart(partFile string) error {
	f, err := os.OpenFile(partFile, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("recordings: repair: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("recordings: repair: %w", err)
	}
	end, err := repairEnd(f, fi.Size())
	if err != nil {
		return fmt.Errorf("recordings: repair %s: %w", partFile, err)
	}
	if end == fi.Size() {
		return nil
	}
	if err := f.Truncate(end); err != nil {
		return fmt.Errorf("recordings: repair: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("recordings: repair: %w", err)
	}
	return nil
}

// box is a top-level box header.
type box struct {
	typ  string
	size int64 // whole box, header included
}

// readBox reads the header of the box at off. ok is false when there is no
// complete, sane box there (short file, bad size, size 0 "to the end of
// the file", which a crash leaves ambiguous).
func readBox(r io.ReaderAt, off, size int64) (b box, ok bool, err error) {
	var h [16]byte
	if size-off < 8 {
		return box{}, false, nil
	}
	if _, err := r.ReadAt(h[:8], off); err != nil {
		return box{}, false, err
	}
	b.typ = string(h[4:8])
	b.size = int64(binary.BigEndian.Uint32(h[:4]))
	switch b.size {
	case 0:
		return box{}, false, nil
	case 1:
		if size-off < 16 {
			return box{}, false, nil
		}
		if _, err := r.ReadAt(h[8:16], off+8); err != nil {
			return box{}, false, err
		}
		large := binary.BigEndian.Uint64(h[8:16])
		if large < 16 || large > uint64(size-off) {
			return box{}, false, nil
		}
		b.size = int64(large)
	default:
		if b.size < 8 || b.size > size-off {
			return box{}, false, nil
		}
	}
	return b, true, nil
}

// repairEnd returns the length of the repaired file: the end of its last
// complete moof+mdat pair (or of its moov when it has none). It returns
// ErrNoInit when the file does not start with a complete ftyp and moov
// (other complete boxes, such as free, may come between them).
func repairEnd(r io.ReaderAt, size int64) (int64, error) {
	var off int64
	ftyp, moov := false, false
	for !moov {
		b, ok, err := readBox(r, off, size)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, ErrNoInit
		}
		switch {
		case !ftyp && b.typ != "ftyp":
			return 0, ErrNoInit
		case b.typ == "ftyp":
			if ftyp {
				return 0, ErrNoInit
			}
			ftyp = true
		case b.typ == "moov":
			moov = true
		case b.typ == "moof" || b.typ == "mdat":
			return 0, ErrNoInit
		}
		off += b.size
	}
	end := off
	for off < size {
		b, ok, err := readBox(r, off, size)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		switch b.typ {
		case "moof":
			m, ok, err := readBox(r, off+b.size, size)
			if err != nil {
				return 0, err
			}
			if !ok || m.typ != "mdat" {
				return end, nil // a torn fragment: everything after goes
			}
			off += b.size + m.size
			end = off
			continue
		case "ftyp", "moov", "mdat":
			return end, nil // out of place: the file is not ours past here
		}
		off += b.size // another complete box (styp, sidx, free, ...)
	}
	return end, nil
}
