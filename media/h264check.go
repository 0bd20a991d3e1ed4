package media

import (
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/bits"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// h264Check decides whether an H.264 access unit can be decoded before the
// hub forwards it: a camera that sends garbage RTP, or an encoder that
// breaks, must not reach viewers as "video". It parses what a decoder
// parses before the macroblocks: the parameter sets (ITU-T H.264 §7.3.2.1,
// §7.3.2.2) and every slice header (§7.3.3) against them, with the range
// limits of §7.4, and follows frame_num across pictures (§7.4.3: without
// gaps_in_frame_num_value_allowed_flag a jump means a lost reference
// picture, and every picture until the next IDR would decode against the
// wrong reference). Random bytes pass all of that rarely (measured in
// TestH264CheckRejectsRandomNALUs); the rest is left to the decoder.
//
// Parameter sets that differ from the ones in use stay pending until an
// IDR decodes against them (then they are committed, and the hub repeats
// them in front of IDRs): garbage that happens to parse as an SPS or PPS
// cannot replace the real ones of a camera that sends them only once.
// An IDR tries the parameter sets sent in its own access unit first, then
// those in use, then older pending ones; other pictures use those in use.
//
// Not safe for concurrent use: the Stream calls it under its lock.
type h264Check struct {
	sps, pendSPS map[uint32]*spsEntry // committed, pending by id
	pps, pendPPS map[uint32]*ppsEntry
	au           uint64 // access units begun (beginAU)

	// frame_num of the latest reference picture, valid when haveRef.
	prevRefFrameNum uint32
	haveRef         bool

	scratch []byte // emulation prevention removed from a slice header
}

// spsEntry and ppsEntry are parameter sets as sent and as parsed, with the
// access unit they came in.
type spsEntry struct {
	paramSet
	h264.SPS
}

type ppsEntry struct {
	paramSet
	ppsInfo
}

type paramSet struct {
	raw []byte
	au  uint64
}

func (p *paramSet) fromAU() uint64 { return p.au }

// ppsInfo is what a slice header needs from its picture parameter set.
type ppsInfo struct {
	spsID                   uint32
	entropyCABAC            bool
	bottomFieldPicOrder     bool
	numRefIdxDefault        [2]uint32 // num_ref_idx_l0/l1_default_active_minus1
	weightedPred            bool
	weightedBipredIdc       uint32
	picInitQPMinus26        int32
	deblockingFilterControl bool
	redundantPicCntPresent  bool
}

// sliceInfo is what the picture-level checks need from one slice.
type sliceInfo struct {
	pps      *ppsEntry
	sps      *spsEntry
	firstMB  uint32
	idr      bool
	refIdc   uint8
	ppsID    uint32
	frameNum uint32
	mmco5    bool
}

// errH264Invalid wraps every reason an access unit is not decodable.
var errH264Invalid = errors.New("invalid H.264")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errH264Invalid, fmt.Sprintf(format, args...))
}

// reset forgets the reference chain (a new run, a loop of a file): the next
// picture must be an IDR anyway.
func (c *h264Check) reset() { c.haveRef = false }

// beginAU starts an access unit: parameter sets learned from now on belong
// to it.
func (c *h264Check) beginAU() { c.au++ }

// commitParams makes the given parameter sets (declared out of band: SDP,
// avcC) the ones in use. Invalid ones are ignored: the slices that need
// them will say so.
func (c *h264Check) commitParams(sps, pps []byte) {
	c.beginAU()
	var pic picture
	for _, n := range [][]byte{sps, pps} {
		if c.nalu(n, &pic) != nil || len(n) == 0 {
			continue
		}
		if n[0]&0x1f == naluSPS {
			for id, e := range c.pendSPS {
				c.commit(nil, e, id)
			}
		} else {
			for id, e := range c.pendPPS {
				c.commit(e, nil, id)
			}
		}
	}
}

// commit moves a pending parameter set to the ones in use.
func (c *h264Check) commit(pps *ppsEntry, sps *spsEntry, id uint32) {
	if sps != nil && c.pendSPS[id] == sps {
		delete(c.pendSPS, id)
		if c.sps == nil {
			c.sps = map[uint32]*spsEntry{}
		}
		c.sps[id] = sps
	}
	if pps != nil && c.pendPPS[id] == pps {
		delete(c.pendPPS, id)
		if c.pps == nil {
			c.pps = map[uint32]*ppsEntry{}
		}
		c.pps[id] = pps
	}
}

// learnSPS parses a sequence parameter set and keeps it pending unless it
// is the one in use.
func (c *h264Check) learnSPS(n []byte) error {
	var sps h264.SPS
	if err := sps.Unmarshal(n); err != nil {
		return invalidf("SPS: %v", err)
	}
	if sps.ID > 31 || sps.Log2MaxFrameNumMinus4 > 12 || sps.PicOrderCntType > 2 ||
		sps.Log2MaxPicOrderCntLsbMinus4 > 12 || sps.ChromaFormatIdc > 3 ||
		sps.BitDepthLumaMinus8 > 6 || sps.BitDepthChromaMinus8 > 6 {
		return invalidf("SPS: a field out of range")
	}
	if w, h := sps.Width(), sps.Height(); w <= 0 || h <= 0 || w > 16384 || h > 16384 {
		return invalidf("SPS: picture size %dx%d", w, h)
	}
	if cur := c.sps[sps.ID]; cur != nil && string(cur.raw) == string(n) {
		delete(c.pendSPS, sps.ID)
		return nil
	}
	if c.pendSPS == nil {
		c.pendSPS = map[uint32]*spsEntry{}
	}
	c.pendSPS[sps.ID] = &spsEntry{paramSet{append([]byte(nil), n...), c.au}, sps}
	return nil
}

// learnPPS parses and stores a picture parameter set (§7.3.2.2, up to
// redundant_pic_cnt_present_flag: the rest does not shape slice headers).
func (c *h264Check) learnPPS(n []byte) error {
	b := c.rbsp(n[1:], 64)
	pos := 0
	var p ppsInfo
	id, err := bits.ReadGolombUnsigned(b, &pos)
	if err != nil || id > 255 {
		return invalidf("PPS: pic_parameter_set_id")
	}
	if p.spsID, err = bits.ReadGolombUnsigned(b, &pos); err != nil || p.spsID > 31 {
		return invalidf("PPS: seq_parameter_set_id")
	}
	sps := c.pendSPS[p.spsID]
	if sps == nil {
		sps = c.sps[p.spsID]
	}
	if sps == nil {
		return invalidf("PPS %d refers to unknown SPS %d", id, p.spsID)
	}
	r := reader{b: b, pos: pos}
	p.entropyCABAC = r.flag()
	p.bottomFieldPicOrder = r.flag()
	if groups := r.ue(); groups != 0 {
		// Flexible macroblock ordering: no browser decoder implements it.
		return invalidf("PPS: slice groups (FMO) are not decodable by browsers")
	}
	p.numRefIdxDefault[0] = r.ue()
	p.numRefIdxDefault[1] = r.ue()
	p.weightedPred = r.flag()
	p.weightedBipredIdc = uint32(r.bits(2))
	p.picInitQPMinus26 = r.se()
	qs := r.se()
	chromaQPOffset := r.se()
	p.deblockingFilterControl = r.flag()
	r.flag() // constrained_intra_pred_flag
	p.redundantPicCntPresent = r.flag()
	qpBdOffset := 6 * int32(sps.BitDepthLumaMinus8)
	switch {
	case r.err != nil:
		return invalidf("PPS: %v", r.err)
	case p.numRefIdxDefault[0] > 31 || p.numRefIdxDefault[1] > 31:
		return invalidf("PPS: num_ref_idx_default_active_minus1")
	case p.weightedBipredIdc > 2:
		return invalidf("PPS: weighted_bipred_idc %d", p.weightedBipredIdc)
	case p.picInitQPMinus26 < -26-qpBdOffset || p.picInitQPMinus26 > 25:
		return invalidf("PPS: pic_init_qp_minus26 %d", p.picInitQPMinus26)
	case qs < -26 || qs > 25:
		return invalidf("PPS: pic_init_qs_minus26 %d", qs)
	case chromaQPOffset < -12 || chromaQPOffset > 12:
		return invalidf("PPS: chroma_qp_index_offset %d", chromaQPOffset)
	}
	if cur := c.pps[id]; cur != nil && string(cur.raw) == string(n) {
		delete(c.pendPPS, id)
		return nil
	}
	if c.pendPPS == nil {
		c.pendPPS = map[uint32]*ppsEntry{}
	}
	c.pendPPS[id] = &ppsEntry{paramSet{append([]byte(nil), n...), c.au}, p}
	return nil
}

// rbsp returns up to max bytes of n with emulation prevention bytes
// (§7.4.1: 0x000003) removed, in a scratch buffer reused across calls.
func (c *h264Check) rbsp(n []byte, max int) []byte {
	out := c.scratch[:0]
	zeros := 0
	for _, v := range n {
		if len(out) == max {
			break
		}
		if zeros >= 2 && v == 3 {
			zeros = 0
			continue
		}
		if v == 0 {
			zeros++
		} else {
			zeros = 0
		}
		out = append(out, v)
	}
	c.scratch = out
	return out
}

// checkAU checks one access unit (NALUs without start codes, in decoding
// order) and, when it is decodable, advances the reference chain. It
// learns the parameter sets the AU carries; an invalid one rejects the AU.
// The Stream makes the same calls from its own loop over the NALUs.
func (c *h264Check) checkAU(au [][]byte) error {
	c.beginAU()
	var pic picture
	for _, n := range au {
		if err := c.nalu(n, &pic); err != nil {
			return err
		}
	}
	return c.picture(&pic)
}

// picture collects what the slices of one access unit say.
type picture struct {
	pps      *ppsEntry // of the first slice
	sps      *spsEntry
	slices   int
	lastMB   uint32 // first_mb_in_slice of the latest slice
	idr      bool   // an IDR slice
	ref      bool   // a slice with nal_ref_idc != 0
	ppsID    uint32
	frameNum uint32
	mmco5    bool
}

// nalu checks one NAL unit of an access unit and adds a slice to pic.
// Parameter sets are learned when valid. NAL unit types that decoders
// ignore pass.
func (c *h264Check) nalu(n []byte, pic *picture) error {
	if len(n) == 0 {
		return nil
	}
	if n[0]&0x80 != 0 {
		return invalidf("forbidden_zero_bit set (NAL unit type %d)", n[0]&0x1f)
	}
	switch n[0] & 0x1f {
	case naluSPS:
		return c.learnSPS(n)
	case naluPPS:
		return c.learnPPS(n)
	case 2, 3, 4:
		return invalidf("data partitioning (NAL unit type %d) is not decodable by browsers", n[0]&0x1f)
	case naluNonIDR, naluIDR:
		s, err := c.slice(n)
		if err != nil {
			return err
		}
		if pic.slices > 0 && (s.ppsID != pic.ppsID || s.frameNum != pic.frameNum) {
			// §7.4.3: every slice of a picture (and both fields of a
			// pair) has the same frame_num; the PPS is the same too.
			return invalidf("slices of one access unit disagree on PPS or frame_num")
		}
		if s.firstMB != 0 && (pic.slices == 0 || s.firstMB <= pic.lastMB) {
			// Arbitrary slice order (Baseline only) is not implemented by
			// browser decoders: a picture (or field) starts at macroblock
			// 0 and its slices follow in order.
			return invalidf("slices out of order (first_mb_in_slice %d)", s.firstMB)
		}
		if pic.slices == 0 {
			pic.pps, pic.sps = s.pps, s.sps
		} else if s.pps != pic.pps || s.sps != pic.sps {
			return invalidf("slices of one access unit decode against different parameter sets")
		}
		pic.lastMB = s.firstMB
		pic.slices++
		pic.ppsID, pic.frameNum = s.ppsID, s.frameNum
		pic.idr = pic.idr || s.idr
		pic.ref = pic.ref || s.refIdc != 0
		pic.mmco5 = pic.mmco5 || s.mmco5
	}
	return nil
}

// picture checks the access unit's place in the reference chain (after its
// NALUs passed nalu) and advances the chain. An AU without slices is no
// picture and changes nothing.
func (c *h264Check) picture(pic *picture) error {
	if pic.slices == 0 {
		return nil
	}
	if pic.idr {
		c.prevRefFrameNum, c.haveRef = 0, true
		c.commit(pic.pps, nil, pic.ppsID)
		c.commit(nil, pic.sps, pic.pps.spsID)
	} else if !c.haveRef {
		return invalidf("a picture without a preceding IDR")
	} else if sps := pic.sps; !sps.GapsInFrameNumValueAllowedFlag {
		maxFrameNum := uint32(1) << (sps.Log2MaxFrameNumMinus4 + 4)
		if pic.frameNum != c.prevRefFrameNum && pic.frameNum != (c.prevRefFrameNum+1)%maxFrameNum {
			c.haveRef = false
			return invalidf("frame_num %d after %d: a reference picture was lost", pic.frameNum, c.prevRefFrameNum)
		}
	}
	if pic.ref {
		c.prevRefFrameNum = pic.frameNum
		if pic.mmco5 {
			c.prevRefFrameNum = 0 // §8.2.1: memory_management_control_operation 5
		}
	}
	return nil
}

// Slice types (§7.4.3 Table 7-6), modulo 5.
const (
	sliceP  = 0
	sliceB  = 1
	sliceI  = 2
	sliceSP = 3
	sliceSI = 4
)

// slice parses a slice header (§7.3.3) up to its deblocking fields,
// checking each field against its parameter sets and §7.4.3's ranges.
func (c *h264Check) slice(n []byte) (sliceInfo, error) {
	s := sliceInfo{idr: n[0]&0x1f == naluIDR, refIdc: n[0] >> 5 & 3}
	if s.idr && s.refIdc == 0 {
		return s, invalidf("IDR with nal_ref_idc 0")
	}
	r := reader{b: c.rbsp(n[1:], 512)}
	s.firstMB = r.ue()
	sliceType := r.ue()
	s.ppsID = r.ue()
	if r.err != nil {
		return s, invalidf("slice header: %v", r.err)
	}
	if sliceType > 9 {
		return s, invalidf("slice_type %d", sliceType)
	}
	st := sliceType % 5
	if s.idr && st != sliceI && st != sliceSI {
		return s, invalidf("IDR with slice_type %d", sliceType)
	}
	var err error
	ppsCands, np := candidates(c.pps, c.pendPPS, s.ppsID, s.idr, c.au)
	for _, pps := range ppsCands[:np] {
		spsCands, ns := candidates(c.sps, c.pendSPS, pps.spsID, s.idr, c.au)
		if ns == 0 {
			err = invalidf("PPS %d refers to unknown SPS %d", s.ppsID, pps.spsID)
		}
		for _, sps := range spsCands[:ns] {
			s.pps, s.sps = pps, sps
			var out sliceInfo
			if out, err = c.sliceRest(n, r, s, sliceType, pps, sps); err == nil {
				return out, nil
			}
		}
	}
	if np == 0 {
		err = invalidf("slice refers to unknown PPS %d", s.ppsID)
	}
	return s, err
}

// candidates lists the parameter sets with id that a slice may decode
// against, in the order to try them (see h264Check).
func candidates[E interface {
	comparable
	fromAU() uint64
}](cur, pend map[uint32]E, id uint32, idr bool, au uint64) (out [2]E, n int) {
	var none E
	c, p := cur[id], pend[id]
	if !idr {
		p = none
	}
	if p != none && p.fromAU() == au {
		c, p = p, c
	}
	for _, e := range [2]E{c, p} {
		if e != none {
			out[n] = e
			n++
		}
	}
	return out, n
}

// sliceRest parses the slice header after pic_parameter_set_id against one
// choice of parameter sets.
func (c *h264Check) sliceRest(n []byte, r reader, s sliceInfo, sliceType uint32, pps *ppsEntry, sps *spsEntry) (sliceInfo, error) {
	st := sliceType % 5
	firstMB := s.firstMB
	picSizeInMbs := (sps.PicWidthInMbsMinus1 + 1) * (sps.PicHeightInMapUnitsMinus1 + 1)
	if !sps.FrameMbsOnlyFlag {
		picSizeInMbs *= 2
	}
	if firstMB >= picSizeInMbs {
		return s, invalidf("first_mb_in_slice %d of %d macroblocks", firstMB, picSizeInMbs)
	}
	if sps.SeparateColourPlaneFlag {
		if r.bits(2) > 2 {
			return s, invalidf("colour_plane_id")
		}
	}
	s.frameNum = uint32(r.bits(int(sps.Log2MaxFrameNumMinus4) + 4))
	field := false
	if !sps.FrameMbsOnlyFlag {
		if field = r.flag(); field {
			r.flag() // bottom_field_flag
		}
	}
	if s.idr {
		if s.frameNum != 0 {
			return s, invalidf("IDR with frame_num %d", s.frameNum)
		}
		if r.ue() > 65535 {
			return s, invalidf("idr_pic_id")
		}
	}
	switch {
	case sps.PicOrderCntType == 0:
		r.bits(int(sps.Log2MaxPicOrderCntLsbMinus4) + 4)
		if pps.bottomFieldPicOrder && !field {
			r.se()
		}
	case sps.PicOrderCntType == 1 && !sps.DeltaPicOrderAlwaysZeroFlag:
		r.se()
		if pps.bottomFieldPicOrder && !field {
			r.se()
		}
	}
	if pps.redundantPicCntPresent && r.ue() > 127 {
		return s, invalidf("redundant_pic_cnt")
	}
	if st == sliceB {
		r.flag() // direct_spatial_mv_pred_flag
	}
	numRefIdx := pps.numRefIdxDefault
	maxRefIdx := uint32(15)
	if field {
		maxRefIdx = 31
	}
	if st == sliceP || st == sliceSP || st == sliceB {
		if r.flag() { // num_ref_idx_active_override_flag
			numRefIdx[0] = r.ue()
			if st == sliceB {
				numRefIdx[1] = r.ue()
			}
		}
		if numRefIdx[0] > maxRefIdx || (st == sliceB && numRefIdx[1] > maxRefIdx) {
			return s, invalidf("num_ref_idx_active_minus1 out of range")
		}
	}
	// ref_pic_list_modification (§7.3.3.1)
	lists := 0
	switch st {
	case sliceP, sliceSP:
		lists = 1
	case sliceB:
		lists = 2
	}
	for l := 0; l < lists; l++ {
		if !r.flag() {
			continue
		}
		for i := 0; ; i++ {
			idc := r.ue()
			if idc == 3 {
				break
			}
			if idc > 2 || i > int(numRefIdx[l])+1 || r.err != nil {
				return s, invalidf("ref_pic_list_modification")
			}
			r.ue() // abs_diff_pic_num_minus1 or long_term_pic_num
		}
	}
	if (pps.weightedPred && (st == sliceP || st == sliceSP)) || (pps.weightedBipredIdc == 1 && st == sliceB) {
		if err := predWeightTable(&r, &sps.SPS, st, numRefIdx); err != nil {
			return s, err
		}
	}
	if s.refIdc != 0 {
		// dec_ref_pic_marking (§7.3.3.3)
		if s.idr {
			r.flag() // no_output_of_prior_pics_flag
			r.flag() // long_term_reference_flag
		} else if r.flag() { // adaptive_ref_pic_marking_mode_flag
			for i := 0; ; i++ {
				op := r.ue()
				if op == 0 {
					break
				}
				if op > 6 || i > 66 || r.err != nil {
					return s, invalidf("memory_management_control_operation")
				}
				switch op {
				case 1, 3:
					r.ue() // difference_of_pic_nums_minus1
				case 2:
					r.ue() // long_term_pic_num
				case 4:
					r.ue() // max_long_term_frame_idx_plus1
				case 5:
					s.mmco5 = true
				}
				if op == 3 || op == 6 {
					r.ue() // long_term_frame_idx
				}
			}
		}
	}
	if pps.entropyCABAC && st != sliceI && st != sliceSI && r.ue() > 2 {
		return s, invalidf("cabac_init_idc")
	}
	qpBdOffset := 6 * int32(sps.BitDepthLumaMinus8)
	if qp := 26 + pps.picInitQPMinus26 + r.se(); qp < -qpBdOffset || qp > 51 {
		return s, invalidf("slice QP %d", qp)
	}
	if st == sliceSP || st == sliceSI {
		if st == sliceSP {
			r.flag() // sp_for_switch_flag
		}
		if qs := 26 + r.se(); qs < 0 || qs > 51 {
			return s, invalidf("slice QS %d", qs)
		}
	}
	if pps.deblockingFilterControl {
		if idc := r.ue(); idc > 2 {
			return s, invalidf("disable_deblocking_filter_idc %d", idc)
		} else if idc != 1 {
			if a, b := r.se(), r.se(); a < -6 || a > 6 || b < -6 || b > 6 {
				return s, invalidf("deblocking filter offsets")
			}
		}
	}
	if r.err != nil {
		return s, invalidf("slice header: %v", r.err)
	}
	if r.pos >= len(r.b)*8 && len(n) <= len(r.b)+1 {
		return s, invalidf("slice without data")
	}
	return s, nil
}

// predWeightTable reads pred_weight_table (§7.3.3.2) with §7.4.3.2's ranges.
func predWeightTable(r *reader, sps *h264.SPS, st uint32, numRefIdx [2]uint32) error {
	chroma := sps.ChromaFormatIdc != 0 && !sps.SeparateColourPlaneFlag
	if r.ue() > 7 {
		return invalidf("luma_log2_weight_denom")
	}
	if chroma && r.ue() > 7 {
		return invalidf("chroma_log2_weight_denom")
	}
	lists := 1
	if st == sliceB {
		lists = 2
	}
	for l := 0; l < lists; l++ {
		for i := uint32(0); i <= numRefIdx[l]; i++ {
			n := 0
			if r.flag() {
				n = 1
			}
			if chroma && r.flag() {
				n += 2
			}
			for k := 0; k < n*2; k++ {
				if v := r.se(); v < -128 || v > 127 {
					return invalidf("pred_weight_table weight or offset %d", v)
				}
			}
			if r.err != nil {
				return invalidf("pred_weight_table: %v", r.err)
			}
		}
	}
	return nil
}

// reader reads Exp-Golomb and fixed-width fields, keeping the first error
// (later reads return zero), so that a parser can check once at the end.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) ue() uint32 {
	if r.err != nil {
		return 0
	}
	v, err := bits.ReadGolombUnsigned(r.b, &r.pos)
	r.err = err
	return v
}

func (r *reader) se() int32 {
	if r.err != nil {
		return 0
	}
	v, err := bits.ReadGolombSigned(r.b, &r.pos)
	r.err = err
	return v
}

func (r *reader) flag() bool {
	if r.err != nil {
		return false
	}
	v, err := bits.ReadFlag(r.b, &r.pos)
	r.err = err
	return v
}

func (r *reader) bits(n int) uint64 {
	if r.err != nil {
		return 0
	}
	v, err := bits.ReadBits(r.b, &r.pos, n)
	r.err = err
	return v
}
