package rtsp

import (
	"encoding/binary"
	"io"
	"math"
)

// mkvWriter writes a live Matroska stream: the minimal subset ffmpeg's
// demuxer reads (EBML header, a Segment and Clusters of unknown size,
// SimpleBlocks with millisecond timestamps). It carries what MPEG-TS cannot
// to an ffmpeg's stdin: M-JPEG video with its audio.
type mkvWriter struct {
	w         io.Writer
	inCluster bool
	clusterTS int64 // ms
	buf       []byte
}

// mkvTrack is one track of the stream (numbered from 1 in order).
type mkvTrack struct {
	codecID  string // V_MJPEG, A_AAC, A_OPUS, A_MS/ACM
	private  []byte // CodecPrivate
	audio    bool
	rate     float64 // audio sampling frequency
	channels int
}

// Matroska element IDs (RFC 9559), with their length marker bits.
const (
	mkvEBML               = 0x1A45DFA3
	mkvEBMLVersion        = 0x4286
	mkvEBMLReadVersion    = 0x42F7
	mkvEBMLMaxIDLength    = 0x42F2
	mkvEBMLMaxSizeLength  = 0x42F3
	mkvDocType            = 0x4282
	mkvDocTypeVersion     = 0x4287
	mkvDocTypeReadVersion = 0x4285
	mkvSegment            = 0x18538067
	mkvInfo               = 0x1549A966
	mkvTimestampScale     = 0x2AD7B1
	mkvMuxingApp          = 0x4D80
	mkvWritingApp         = 0x5741
	mkvTracks             = 0x1654AE6B
	mkvTrackEntry         = 0xAE
	mkvTrackNumber        = 0xD7
	mkvTrackUID           = 0x73C5
	mkvTrackType          = 0x83
	mkvFlagLacing         = 0x9C
	mkvCodecID            = 0x86
	mkvCodecPrivate       = 0x63A2
	mkvAudio              = 0xE1
	mkvSamplingFrequency  = 0xB5
	mkvChannels           = 0x9F
	mkvCluster            = 0x1F43B675
	mkvTimestamp          = 0xE7
	mkvSimpleBlock        = 0xA3
)

// mkvUnknownSize marks a live Segment or Cluster.
var mkvUnknownSize = []byte{0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}

func mkvID(b []byte, id uint32) []byte {
	switch {
	case id >= 1<<24:
		return append(b, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<16:
		return append(b, byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<8:
		return append(b, byte(id>>8), byte(id))
	}
	return append(b, byte(id))
}

// mkvSize writes an 8-byte size.
func mkvSize(b []byte, n int) []byte {
	return append(b, 0x01, byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func mkvElem(b []byte, id uint32, body []byte) []byte {
	b = mkvID(b, id)
	b = mkvSize(b, len(body))
	return append(b, body...)
}

func mkvUint(b []byte, id uint32, v uint64) []byte {
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], v)
	return mkvElem(b, id, x[:])
}

func mkvFloat(b []byte, id uint32, v float64) []byte {
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], math.Float64bits(v))
	return mkvElem(b, id, x[:])
}

// header writes the EBML header, opens the Segment and declares tracks.
func (m *mkvWriter) header(tracks []mkvTrack) error {
	var h []byte
	h = mkvUint(h, mkvEBMLVersion, 1)
	h = mkvUint(h, mkvEBMLReadVersion, 1)
	h = mkvUint(h, mkvEBMLMaxIDLength, 4)
	h = mkvUint(h, mkvEBMLMaxSizeLength, 8)
	h = mkvElem(h, mkvDocType, []byte("matroska"))
	h = mkvUint(h, mkvDocTypeVersion, 4)
	h = mkvUint(h, mkvDocTypeReadVersion, 2)
	out := mkvElem(nil, mkvEBML, h)
	out = mkvID(out, mkvSegment)
	out = append(out, mkvUnknownSize...)

	var info []byte
	info = mkvUint(info, mkvTimestampScale, 1_000_000) // ms
	info = mkvElem(info, mkvMuxingApp, []byte("icey"))
	info = mkvElem(info, mkvWritingApp, []byte("icey"))
	out = mkvElem(out, mkvInfo, info)

	var trs []byte
	for i, t := range tracks {
		var e []byte
		e = mkvUint(e, mkvTrackNumber, uint64(i+1))
		e = mkvUint(e, mkvTrackUID, uint64(i+1))
		typ := uint64(1)
		if t.audio {
			typ = 2
		}
		e = mkvUint(e, mkvTrackType, typ)
		e = mkvUint(e, mkvFlagLacing, 0)
		e = mkvElem(e, mkvCodecID, []byte(t.codecID))
		if len(t.private) > 0 {
			e = mkvElem(e, mkvCodecPrivate, t.private)
		}
		if t.audio {
			var a []byte
			a = mkvFloat(a, mkvSamplingFrequency, t.rate)
			a = mkvUint(a, mkvChannels, uint64(t.channels))
			e = mkvElem(e, mkvAudio, a)
		}
		trs = mkvElem(trs, mkvTrackEntry, e)
	}
	out = mkvElem(out, mkvTracks, trs)
	_, err := m.w.Write(out)
	return err
}

// block writes one frame of track (1-based) at ts milliseconds. A new
// Cluster starts every second (at a video keyframe when possible) and
// whenever the relative timestamp would not fit.
func (m *mkvWriter) block(track int, ts int64, key bool, data []byte) error {
	rel := ts - m.clusterTS
	b := m.buf[:0]
	if !m.inCluster || rel < -30000 || rel > 30000 || (key && rel >= 1000) || rel >= 5000 {
		m.inCluster, m.clusterTS, rel = true, ts, 0
		b = mkvID(b, mkvCluster)
		b = append(b, mkvUnknownSize...)
		b = mkvUint(b, mkvTimestamp, uint64(max(ts, 0)))
	}
	b = mkvID(b, mkvSimpleBlock)
	b = mkvSize(b, 4+len(data))
	flags := byte(0)
	if key {
		flags = 0x80
	}
	b = append(b, 0x80|byte(track), byte(uint16(int16(rel))>>8), byte(uint16(int16(rel))), flags)
	m.buf = b
	if _, err := m.w.Write(b); err != nil {
		return err
	}
	_, err := m.w.Write(data)
	return err
}

// opusHead is the CodecPrivate of an Opus track (RFC 7845 §5.1).
func opusHead(channels int) []byte {
	h := []byte("OpusHead")
	h = append(h, 1, byte(channels))
	h = binary.LittleEndian.AppendUint16(h, 3840) // pre-skip
	h = binary.LittleEndian.AppendUint32(h, 48000)
	h = binary.LittleEndian.AppendUint16(h, 0) // gain
	return append(h, 0)                        // mapping family 0
}

// waveFormatEx is the CodecPrivate of an A_MS/ACM G.711 track.
func waveFormatEx(tag uint16, rate, channels int) []byte {
	var w []byte
	w = binary.LittleEndian.AppendUint16(w, tag)
	w = binary.LittleEndian.AppendUint16(w, uint16(channels))
	w = binary.LittleEndian.AppendUint32(w, uint32(rate))
	w = binary.LittleEndian.AppendUint32(w, uint32(rate*channels))
	w = binary.LittleEndian.AppendUint16(w, uint16(channels))
	w = binary.LittleEndian.AppendUint16(w, 8)
	return binary.LittleEndian.AppendUint16(w, 0)
}
