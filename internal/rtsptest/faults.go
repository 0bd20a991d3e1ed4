package rtsptest

// breakAU returns a broken copy of an H.264 access unit (NALUs without
// parameter sets), the k-th way of FaultInvalidH264, or nil to leave the
// access unit out. The input is not modified.
func breakAU(au [][]byte, sps []byte, k int) [][]byte {
	out := make([][]byte, 0, len(au)+1)
	slice := -1
	for i, n := range au {
		if t := n[0] & 0x1f; slice < 0 && (t == 1 || t == 5) {
			slice = i
		}
		out = append(out, n)
	}
	if slice < 0 {
		return out
	}
	n := append([]byte(nil), au[slice]...)
	switch k % 6 {
	case 0: // forbidden_zero_bit
		n[0] |= 0x80
	case 1: // first_mb_in_slice 0, slice_type P, pic_parameter_set_id 5 (none)
		n = append([]byte{n[0], 0b1_1_00110_1, 0x5a, 0xa5}, n[min(len(n), 4):]...)
	case 2: // cut off inside the slice header
		n = n[:min(len(n), 2)]
	case 3: // data partition A instead of a slice
		n[0] = n[0]&0xe0 | 2
	case 4: // a lost (reference) picture
		return nil
	case 5: // an SPS cut off after its level
		out = append([][]byte{append([]byte(nil), sps[:min(len(sps), 4)]...)}, out...)
		slice++
	}
	out[slice] = n
	return out
}

// hasIDR reports whether an H.264 access unit holds an IDR slice.
func hasIDR(au [][]byte) bool {
	for _, n := range au {
		if len(n) > 0 && n[0]&0x1f == 5 {
			return true
		}
	}
	return false
}
