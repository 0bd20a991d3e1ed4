package testpeer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// frameAssembler turns a video RTP stream into whole frames. It is a
// small, allocation-light stand-in for pion's samplebuilder (which keeps
// two 64 Ki-entry tables per track and holds every frame until the next
// one starts): a frame is emitted at its marker bit when all its packets
// arrived in sequence and the first one starts a partition; a frame with
// a sequence gap is dropped, as a decoder would have to drop it.
type frameAssembler struct {
	mime   string // lower-case mime type
	newDep func() rtp.Depacketizer
	dep    rtp.Depacketizer

	haveSeq bool
	lastSeq uint16
	inFrame bool
	broken  bool
	ts      uint32
	buf     []byte
}

func newFrameAssembler(mime string) *frameAssembler {
	a := &frameAssembler{mime: strings.ToLower(mime)}
	switch a.mime {
	case strings.ToLower(webrtc.MimeTypeH264):
		a.newDep = func() rtp.Depacketizer { return &codecs.H264Packet{} }
	case strings.ToLower(webrtc.MimeTypeH265):
		a.newDep = func() rtp.Depacketizer { return &codecs.H265Depacketizer{} }
	case strings.ToLower(webrtc.MimeTypeVP8):
		a.newDep = func() rtp.Depacketizer { return &codecs.VP8Packet{} }
	default:
		return nil
	}
	a.dep = a.newDep()
	return a
}

// push adds a packet; it returns a complete frame (owned by the caller)
// and its RTP timestamp when p ends one.
func (a *frameAssembler) push(p *rtp.Packet) (frame []byte, ts uint32, ok bool) {
	gap := a.haveSeq && p.SequenceNumber != a.lastSeq+1
	if a.haveSeq && int16(p.SequenceNumber-a.lastSeq) <= 0 {
		return nil, 0, false // duplicate or late (e.g. a retransmission): ignore
	}
	a.haveSeq, a.lastSeq = true, p.SequenceNumber
	if len(p.Payload) == 0 { // padding (bandwidth probes)
		if gap {
			a.broken = true
		}
		return nil, 0, false
	}
	if a.inFrame && p.Timestamp != a.ts {
		a.inFrame = false // the previous frame lost its end
	}
	if !a.inFrame {
		a.inFrame, a.ts, a.buf = true, p.Timestamp, nil
		a.broken = gap || !a.dep.IsPartitionHead(p.Payload)
		a.dep = a.newDep()
	} else if gap {
		a.broken = true
	}
	if !a.broken {
		data, err := a.dep.Unmarshal(p.Payload)
		if err != nil {
			a.broken = true
		} else {
			a.buf = append(a.buf, data...)
		}
	}
	if !a.dep.IsPartitionTail(p.Marker, p.Payload) {
		return nil, 0, false
	}
	a.inFrame = false
	if a.broken || len(a.buf) == 0 {
		return nil, 0, false
	}
	frame, a.buf = a.buf, nil
	return frame, a.ts, true
}

// annexBNALUs splits an Annex-B stream into NAL units without start codes.
func annexBNALUs(b []byte) [][]byte { return SplitAnnexB(b) }

// frameInfo reports whether a whole frame (Annex-B for H.264/H.265, a VP8
// frame) is a keyframe, and the VP8 keyframe's picture size.
func frameInfo(mime string, f []byte) (key bool, w, h int) {
	switch mime {
	case strings.ToLower(webrtc.MimeTypeH264):
		for _, n := range annexBNALUs(f) {
			if n[0]&0x1f == 5 {
				return true, 0, 0
			}
		}
	case strings.ToLower(webrtc.MimeTypeH265):
		for _, n := range annexBNALUs(f) {
			if t := (n[0] >> 1) & 0x3f; t >= 16 && t <= 21 {
				return true, 0, 0
			}
		}
	case strings.ToLower(webrtc.MimeTypeVP8):
		if len(f) >= 10 && f[0]&1 == 0 && f[3] == 0x9d && f[4] == 0x01 && f[5] == 0x2a {
			return true, int(binary.LittleEndian.Uint16(f[6:8]) & 0x3fff), int(binary.LittleEndian.Uint16(f[8:10]) & 0x3fff)
		}
	}
	return false, 0, 0
}

// paramSets keeps the latest H.264 SPS/PPS or H.265 VPS/SPS/PPS so that a
// recording can start with them even when the keyframe does not carry
// them in-band.
type paramSets struct{ vps, sps, pps []byte }

func (ps *paramSets) update(mime string, f []byte) {
	for _, n := range annexBNALUs(f) {
		switch mime {
		case strings.ToLower(webrtc.MimeTypeH264):
			switch n[0] & 0x1f {
			case 7:
				ps.sps = append([]byte(nil), n...)
			case 8:
				ps.pps = append([]byte(nil), n...)
			}
		case strings.ToLower(webrtc.MimeTypeH265):
			switch (n[0] >> 1) & 0x3f {
			case 32:
				ps.vps = append([]byte(nil), n...)
			case 33:
				ps.sps = append([]byte(nil), n...)
			case 34:
				ps.pps = append([]byte(nil), n...)
			}
		}
	}
}

// prefix returns the parameter sets f lacks, in Annex-B.
func (ps *paramSets) prefix(mime string, f []byte) []byte {
	var have paramSets
	have.update(mime, f)
	var out []byte
	add := func(missing bool, n []byte) {
		if missing && n != nil {
			out = append(append(out, 0, 0, 0, 1), n...)
		}
	}
	add(have.vps == nil && mime == strings.ToLower(webrtc.MimeTypeH265), ps.vps)
	add(have.sps == nil, ps.sps)
	add(have.pps == nil, ps.pps)
	return out
}

// recFrame is one recorded frame.
type recFrame struct {
	data []byte
	ts   uint32
	key  bool
	at   time.Time
}

// recording is an in-progress Record.
type recording struct {
	window   uint32 // RTP ticks
	started  bool
	first    uint32
	frames   []recFrame
	prefix   []byte // parameter sets put in front of the first frame
	done     chan struct{}
	finished bool
}

// onFrame handles a whole received video frame (from the track's reader).
func (v *Viewer) onFrame(mime string, f []byte, ts uint32, now time.Time) {
	v.frames.Add(1)
	key, w, h := frameInfo(mime, f)
	v.recMu.Lock()
	defer v.recMu.Unlock()
	if key {
		v.keyFrames++
	}
	if r := v.rec; r != nil && !r.finished && (r.started || key) {
		if !r.started {
			r.started, r.first = true, ts
			r.prefix = v.params.prefix(mime, f)
		}
		if off := int32(ts - r.first); off >= 0 && uint32(off) >= r.window {
			r.finished = true
			close(r.done)
		} else {
			r.frames = append(r.frames, recFrame{data: f, ts: ts, key: key, at: now})
		}
	}
	v.params.update(mime, f)
	if w > 0 {
		v.vp8W, v.vp8H = w, h
	}
}

// Recording is what Record captured and what the decoder made of it.
type Recording struct {
	Codec  string // negotiated video mime type, e.g. "video/H264"
	Path   string // the elementary-stream file: .h264, .h265 (Annex-B) or .ivf
	Frames int    // whole frames recorded (from the first keyframe on)
	// Keyframes among Frames.
	Keyframes int
	// Span is the RTP-timestamp duration of the recorded frames: last minus
	// first timestamp (max minus min with B-frames) plus one mean frame
	// interval, i.e. Frames / Span is the sent frame rate.
	Span time.Duration
	// Wall is the arrival time from the first to the last recorded frame.
	Wall time.Duration
	// Decoded is the number of frames ffprobe decoded from Path, and Width
	// and Height the decoded picture size.
	Decoded       int
	Width, Height int
	// FPS is Decoded / Span.
	FPS float64
	// DecodeLog is what ffprobe printed at -v error (decoding errors).
	DecodeLog string
}

// Record waits for the video track and its next keyframe (sending a PLI if none arrived
// within 300 ms), records window of video (by RTP timestamps) into an
// elementary-stream file in dir and decodes it with ffprobe. It fails when
// the codec cannot be recorded, no keyframe or not enough video arrives
// before ctx is done, or ffprobe is missing or cannot read the file.
func (v *Viewer) Record(ctx context.Context, window time.Duration, dir string) (*Recording, error) {
	mime := v.VideoCodec()
	for mime == "" { // the track arrives with its first packet
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("testpeer: no video track: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		mime = v.VideoCodec()
	}
	ext := map[string]string{"video/h264": ".h264", "video/h265": ".h265", "video/vp8": ".ivf"}[strings.ToLower(mime)]
	if ext == "" {
		return nil, fmt.Errorf("testpeer: cannot record %s", mime)
	}
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		return nil, fmt.Errorf("testpeer: ffprobe not found (apt-get install -y ffmpeg): %w", err)
	}
	r := &recording{window: uint32(window.Seconds() * 90000), done: make(chan struct{})}
	v.recMu.Lock()
	if v.rec != nil && !v.rec.finished {
		v.recMu.Unlock()
		return nil, errors.New("testpeer: a recording is already running")
	}
	v.rec = r
	v.recMu.Unlock()
	defer func() {
		v.recMu.Lock()
		if v.rec == r {
			v.rec = nil
		}
		v.recMu.Unlock()
	}()

	pli := time.NewTimer(300 * time.Millisecond)
	defer pli.Stop()
	for waiting := true; waiting; {
		select {
		case <-r.done:
			waiting = false
		case <-pli.C:
			v.recMu.Lock()
			started := r.started
			v.recMu.Unlock()
			if !started {
				if ssrc := v.videoSSRC.Load(); ssrc != 0 {
					_ = v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
				}
				pli.Reset(time.Second)
			}
		case <-ctx.Done():
			v.recMu.Lock()
			n, started := len(r.frames), r.started
			r.finished = true
			v.recMu.Unlock()
			if !started {
				return nil, fmt.Errorf("testpeer: no %s keyframe: %w", mime, ctx.Err())
			}
			return nil, fmt.Errorf("testpeer: %d %s frames in the window so far: %w", n, mime, ctx.Err())
		}
	}
	v.recMu.Lock()
	frames, prefix := r.frames, r.prefix
	w, h := v.vp8W, v.vp8H
	v.recMu.Unlock()

	rec := &Recording{Codec: mime, Path: filepath.Join(dir, "video"+ext), Frames: len(frames)}
	var buf bytes.Buffer
	var minOff, maxOff int64
	for i, f := range frames {
		off := int64(int32(f.ts - frames[0].ts))
		if i == 0 || off < minOff {
			minOff = off
		}
		if off > maxOff {
			maxOff = off
		}
		if f.key {
			rec.Keyframes++
		}
	}
	if n := len(frames); n > 1 {
		ticks := float64(maxOff-minOff) * float64(n) / float64(n-1)
		rec.Span = time.Duration(ticks / 90000 * float64(time.Second))
		rec.Wall = frames[n-1].at.Sub(frames[0].at)
	}
	if ext == ".ivf" {
		writeIVF(&buf, frames, w, h)
	} else {
		buf.Write(prefix)
		for _, f := range frames {
			buf.Write(f.data)
		}
	}
	if err := os.WriteFile(rec.Path, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := probeDecode(ctx, ffprobe, rec); err != nil {
		return rec, err
	}
	if rec.Span > 0 {
		rec.FPS = float64(rec.Decoded) / rec.Span.Seconds()
	}
	v.recMu.Lock()
	v.decW, v.decH = rec.Width, rec.Height
	v.recMu.Unlock()
	return rec, nil
}

// writeIVF writes VP8 frames as an IVF file (timebase 1/90000).
func writeIVF(buf *bytes.Buffer, frames []recFrame, w, h int) {
	hdr := make([]byte, 32)
	copy(hdr, "DKIF")
	binary.LittleEndian.PutUint16(hdr[4:], 0)
	binary.LittleEndian.PutUint16(hdr[6:], 32)
	copy(hdr[8:], "VP80")
	binary.LittleEndian.PutUint16(hdr[12:], uint16(w))
	binary.LittleEndian.PutUint16(hdr[14:], uint16(h))
	binary.LittleEndian.PutUint32(hdr[16:], 90000)
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	binary.LittleEndian.PutUint32(hdr[24:], uint32(len(frames)))
	buf.Write(hdr)
	for _, f := range frames {
		fh := make([]byte, 12)
		binary.LittleEndian.PutUint32(fh, uint32(len(f.data)))
		binary.LittleEndian.PutUint64(fh[4:], uint64(f.ts-frames[0].ts))
		buf.Write(fh)
		buf.Write(f.data)
	}
}

// probeDecode decodes rec.Path with ffprobe -count_frames.
func probeDecode(ctx context.Context, ffprobe string, rec *Recording) error {
	cmd := exec.CommandContext(ctx, ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,width,height", "-of", "json", rec.Path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	rec.DecodeLog = stderr.String()
	if err != nil {
		return fmt.Errorf("testpeer: ffprobe %s: %v: %s", rec.Path, err, rec.DecodeLog)
	}
	var res struct {
		Streams []struct {
			Width        int    `json:"width"`
			Height       int    `json:"height"`
			NbReadFrames string `json:"nb_read_frames"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("testpeer: ffprobe output: %v", err)
	}
	if len(res.Streams) == 0 {
		return fmt.Errorf("testpeer: ffprobe found no video stream in %s: %s", rec.Path, rec.DecodeLog)
	}
	s := res.Streams[0]
	rec.Width, rec.Height = s.Width, s.Height
	rec.Decoded, _ = strconv.Atoi(s.NbReadFrames)
	return nil
}

// DecodedFPS records window of video from the next keyframe (see Record),
// decodes it with ffprobe and returns the decoded frames per second of
// RTP time and the number of frames decoded. Any decoding error ffprobe
// reports (at -v error) is returned as err, with fps and frames still set. The decoded picture size is
// then available from DecodedSize. The file goes to a temporary directory
// that is removed before returning.
func (v *Viewer) DecodedFPS(ctx context.Context, window time.Duration) (fps float64, frames int, err error) {
	dir, err := os.MkdirTemp("", "testpeer-rec-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	rec, err := v.Record(ctx, window, dir)
	if err != nil {
		return 0, 0, err
	}
	if rec.Decoded == 0 {
		return 0, 0, fmt.Errorf("testpeer: ffprobe decoded no frame of %d recorded %s frames: %s", rec.Frames, rec.Codec, rec.DecodeLog)
	}
	if strings.TrimSpace(rec.DecodeLog) != "" {
		// A decoder that conceals errors still outputs frames: its
		// complaints are the sign of a broken stream.
		return rec.FPS, rec.Decoded, fmt.Errorf("testpeer: decoding %d recorded %s frames: %s", rec.Frames, rec.Codec, rec.DecodeLog)
	}
	return rec.FPS, rec.Decoded, nil
}

// DecodedSize is the picture size of the latest Record/DecodedFPS (0, 0
// before).
func (v *Viewer) DecodedSize() (width, height int) {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	return v.decW, v.decH
}

// KeyframesReceived counts whole keyframes received (any codec), unlike
// Keyframes which counts H.264 packets that start one.
func (v *Viewer) KeyframesReceived() int {
	v.recMu.Lock()
	defer v.recMu.Unlock()
	return v.keyFrames
}

// VideoCodec is the negotiated video mime type (e.g. "video/VP8") once the
// video track arrived, else "".
func (v *Viewer) VideoCodec() string {
	if p := v.videoMime.Load(); p != nil {
		return *p
	}
	return ""
}

// AudioCodec is the negotiated audio mime type (e.g. "audio/opus") once
// the audio track arrived, else "".
func (v *Viewer) AudioCodec() string {
	if p := v.audioMime.Load(); p != nil {
		return *p
	}
	return ""
}

// Frames counts the whole video frames received (all packets of the
// frame, in sequence; H.264, H.265 and VP8 only).
func (v *Viewer) Frames() uint64 { return v.frames.Load() }

// WaitFrames waits until n whole video frames arrived.
func (v *Viewer) WaitFrames(n uint64, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if v.frames.Load() >= n {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("testpeer: %d whole video frames after %s, want %d", v.frames.Load(), d, n)
}
