// Package media is the hub between sources and viewers: one Stream per source,
// normalized once (H.264 packetized to <=1200-byte RTP payloads with SPS/PPS in
// front of every IDR, continuous RTP timestamps and sequence numbers across
// source restarts and file loops), published as Units (an access unit or audio
// frame together with its shared RTP packets) and fanned out without blocking
// to a bounded queue per subscriber. The stream's Ring keeps the recent units
// with a keyframe index: a new subscriber starts with the cached GOP from the
// latest keyframe, viewers' NACKs are answered from it by sequence number, and
// recorders and clips take their pre-roll from it.
//
// THIS FILE IS THE CONTRACT other packages code against (sources in media/*,
// the WebRTC session layer in signaling). Keep the exported names and
// semantics; the implementation lives in the other files of this package.
package media

import (
	"context"
	"errors"
	"time"

	"github.com/pion/rtp"
)

// Sentinel errors.
var (
	// ErrClosed is returned by Subscriber.Read after the subscriber or its stream closed.
	ErrClosed = errors.New("media: closed")
	// ErrSourceUnavailable wraps failures to reach or read a source.
	ErrSourceUnavailable = errors.New("media: source unavailable")
	// ErrUnsupportedCodec is returned when a source offers a codec the hub cannot carry.
	ErrUnsupportedCodec = errors.New("media: unsupported codec")
	// ErrNoTracks is returned when a viewer asks for a stream whose source has
	// not yet declared its tracks (e.g. an RTSP camera never reached).
	ErrNoTracks = errors.New("media: stream has no tracks yet")
)

// Kind of a track.
type Kind uint8

const (
	KindVideo Kind = iota
	KindAudio
)

func (k Kind) String() string {
	if k == KindVideo {
		return "video"
	}
	return "audio"
}

// Codec names used in VideoParams.Codec, AudioParams.Codec and Unit.Codec
// (WebRTC MIME subtypes).
const (
	CodecH264 = "H264"
	CodecH265 = "H265"
	CodecVP8  = "VP8"
	CodecOpus = "opus"
	CodecPCMU = "PCMU"
	CodecPCMA = "PCMA"
)

// VideoParams describes the stream's video track: H.264 (from sources),
// H.265 (from sources; passed to viewers that can decode it) or VP8 (a
// rendition's output).
type VideoParams struct {
	// Codec is CodecH264 (also when empty), CodecH265 or CodecVP8.
	Codec string
	// SPS and PPS (and VPS for H.265) as known at setup (may be nil; the
	// hub learns them in-band).
	SPS, PPS, VPS []byte
}

// VideoCodec returns the codec of v (CodecH264 when unset).
func (v *VideoParams) VideoCodec() string {
	if v == nil || v.Codec == "" {
		return CodecH264
	}
	return v.Codec
}

// VideoInfo is what the stream learned of its video from the bitstream:
// the codec, profile and size from the parameter sets, and whether pictures
// are reordered (B-frames), declared by the H.264 SPS
// (max_num_reorder_frames in the VUI) or seen (a presentation time going
// backwards in decoding order). Browsers play reordered H.264 over WebRTC
// at a fraction of its frame rate, so such a stream is not passed through.
type VideoInfo struct {
	Codec   string `json:"codec"`
	Profile string `json:"profile,omitempty"`
	Level   string `json:"level,omitempty"`
	Width   int    `json:"width,omitempty"`
	Height  int    `json:"height,omitempty"`
	// BFrames is true when pictures are reordered.
	BFrames bool `json:"bFrames"`
}

// AudioParams describes the stream's audio track.
type AudioParams struct {
	Codec     string // CodecOpus, CodecPCMU or CodecPCMA
	ClockRate uint32 // 48000 for Opus, 8000 for G.711
	Channels  uint16 // 2 for Opus (per RFC 7587 SDP), 1 for G.711
}

// Tracks is what a stream carries; nil members are absent.
type Tracks struct {
	Video *VideoParams
	Audio *AudioParams
}

// Packet is one normalized RTP packet as sent to every subscriber. It is
// shared and immutable once published: subscribers must copy the header
// before changing it (per-viewer SSRC and sequence numbers are the session
// layer's business).
type Packet struct {
	Kind Kind
	RTP  rtp.Packet
	// Keyframe is true on the first packet of an IDR access unit (which
	// carries SPS/PPS in front of the IDR).
	Keyframe bool
	// FromCache is true for packets replayed from the GOP cache at subscribe time.
	FromCache bool
}

// Unit is one published access unit (video) or encoded frame (audio): what
// the source wrote, as normalized by the stream, together with the RTP
// packets it became. A viewer sends Packets; a recorder or an analyser reads
// Payload; nobody depacketizes what the hub just packetized. A Unit is
// shared by every subscriber and by the stream's Ring, and is immutable once
// published: do not modify it, its slices or the bytes they reference.
type Unit struct {
	Kind Kind
	// Codec is CodecH264 for video, the audio track's codec (CodecOpus,
	// CodecPCMU, CodecPCMA) for audio.
	Codec string
	// PTS is the unit's time on the stream's continuous output timeline
	// (zero at the stream's first write; it keeps increasing across source
	// restarts and file loops, like the RTP timestamps derived from it).
	PTS time.Duration
	// Keyframe is true for a video IDR access unit (which then starts with
	// SPS and PPS). Audio units are never keyframes: each decodes on its own.
	Keyframe bool
	// Payload is video: the NALUs as published (without start codes; no
	// AUD, filler or parameter sets except SPS, PPS in front of an IDR);
	// audio: one slice, the frame. The bytes are the stream's own copy,
	// never the source's buffers; most of them are shared with Packets.
	Payload [][]byte
	// Packets are the unit's shared RTP packets in sending order (the
	// marker bit on the last video packet). For a unit replayed from the
	// GOP cache they are FromCache copies (same header and payload bytes).
	Packets []*Packet
	// FromCache is true for units replayed from the GOP cache at subscribe
	// time (FromCache copies of published units; Payload is shared).
	FromCache bool
	// Seq numbers the stream's published units in publishing order (from
	// 1; a FromCache copy keeps its original's).
	Seq uint64

	wire int // RTP payload bytes of Packets
	mem  int // bytes of the unit's buffer (RTP payloads + NALU copies)
}

// SubscribeOptions tune one subscriber.
type SubscribeOptions struct {
	// QueuePackets bounds the live queue in RTP packets: a queued unit
	// counts with its packets (default 1024). The cached GOP burst is queued
	// in front and does not count against it.
	QueuePackets int
	// NoCache starts at the next live keyframe instead of the cached GOP.
	NoCache bool
	// VideoOnly / AudioOnly filter tracks.
	VideoOnly, AudioOnly bool
	// Live delivers every unit published from now on: no cached burst and
	// no initial wait for a keyframe (for a consumer that relays units to
	// receivers which start elsewhere).
	Live bool
	// Group, when set, makes the subscriber stand for the receivers it
	// relays to: the stream's Stats count and list what Group returns
	// instead of the subscriber itself. Called without the stream's lock.
	Group func() []SubscriberStats
}

// SourceState is the supervision state of a stream's source.
type SourceState string

const (
	SourceStarting     SourceState = "starting"
	SourceUp           SourceState = "up"           // media flowing
	SourceReconnecting SourceState = "reconnecting" // failed, retrying
	SourceEnded        SourceState = "ended"        // a finite file without loop finished
	SourceStopped      SourceState = "stopped"      // closed
)

// Writer is the write side of a stream: all a Source may do with it. Sources
// depend on this interface rather than on *Stream so that what they write
// into can change (a recorder in tests, another hub) without touching them.
// *Stream implements it: its methods are safe to call from several
// goroutines (e.g. video from the reader, audio from a transcoder's
// callback), never block on viewers, and keep no reference to their
// argument slices after returning, so a source may reuse its buffers.
type Writer interface {
	// SetTracks declares what this run carries. It must be called before the
	// first WriteH264 or WriteAudio of each run (also after a restart: the
	// tracks may have changed); audio written before an audio track was
	// declared is dropped. SPS/PPS given here are used until in-band ones
	// arrive.
	SetTracks(t Tracks)
	// WriteH264 writes one access unit: NALUs without start codes in
	// decoding order, pts on the source's own timeline (any origin; the
	// stream maps it onto its continuous one). Parameter sets are learned
	// in-band; video before the first IDR of a run is dropped.
	WriteH264(pts time.Duration, au [][]byte)
	// WriteH265 is WriteH264 for H.265 (RFC 7798): VPS, SPS and PPS are
	// learned in-band and put in front of every random-access picture,
	// video before the first one of a run is dropped.
	WriteH265(pts time.Duration, au [][]byte)
	// WriteAudio writes one encoded audio frame of the declared codec, pts on
	// the same timeline as the video (A/V sync depends on it).
	WriteAudio(pts time.Duration, frame []byte)
	// Discontinuity says the source's timeline jumps (a file looped, a
	// source restarted): the next write is rebased so that output timestamps
	// keep increasing, and video waits for the next IDR. The supervisor
	// already calls it before every re-run; a source calls it for jumps
	// within one run.
	Discontinuity()
}

// Warner is optionally implemented by a Source that plays something only in
// part or not as given (e.g. AAC audio dropped or transcoded). Warnings
// returns a copy of the current warnings (they may change from one run to
// the next) and is safe to call while Run is in progress; callers show them
// in status and readiness reports.
type Warner interface {
	Warnings() []string
}

// Source is one kind of input (builtin, file, rtsp, ffmpeg transcode, ...).
// Run connects and writes media into w until ctx is done (return
// ctx.Err()), the media ends (return nil; a file without loop), or the source
// fails (return an error wrapping ErrSourceUnavailable or ErrUnsupportedCodec).
// A Source must call w.SetTracks before the first Write* call of each run;
// the supervisor calls Run again after a failure with backoff, and the Stream
// keeps timestamps continuous across runs.
type Source interface {
	Run(ctx context.Context, w Writer) error
	// Kind is builtin | file | rtsp | device | url.
	Kind() string
	// String is a log- and API-safe description (credentials removed).
	String() string
}

// StreamStats is a snapshot for /api/status and metrics.
type StreamStats struct {
	State       SourceState
	StateSince  time.Time
	LastError   string // credentials stripped
	Reconnects  uint64
	FPS         float64 // measured video access units per second (last ~2 s)
	Tracks      Tracks
	Subscribers int
	PacketsIn   uint64 // normalized packets published
	BytesIn     uint64
	LastMediaAt time.Time
	// LastKeyframeAt is when the latest video keyframe was published (zero
	// before the first).
	LastKeyframeAt time.Time
	// InvalidVideo counts the video access units dropped because no decoder
	// could decode them (garbage from the source, broken parameter sets or
	// slice headers, a lost reference picture); video resumed at the next
	// keyframe after each. LastInvalidVideo says why the latest one was.
	InvalidVideo       uint64
	LastInvalidVideo   string
	LastInvalidVideoAt time.Time
	Viewers            []SubscriberStats
}

// SubscriberStats is one subscriber's counters, all in RTP packets (a unit
// counts with its packets).
type SubscriberStats struct {
	ID        string
	Sent      uint64 // packets of the units handed to the reader
	Dropped   uint64 // packets dropped on queue overflow or while skipping to a keyframe
	Overflows uint64 // times the queue overflowed
	Queued    int    // packets waiting to be read (cached burst included)
}

var _ Writer = (*Stream)(nil)

// The Stream and Supervisor API (implemented in stream.go, subscriber.go,
// supervisor.go of this package):
//
//	func NewStream(cfg StreamConfig, log *slog.Logger) *Stream
//	type StreamConfig struct {
//	    Name              string
//	    MaxPayload        int           // RTP payload bound, default 1200
//	    GOPCacheMaxBytes  int           // bound on the cached GOP, default 8 MiB
//	    RetransmitPackets int           // shared NACK history of video packets, default 4096
//	    RingDuration      time.Duration // history of units kept in the Ring, default 10 s
//	    RingMaxBytes      int           // byte bound of the Ring, default 32 MiB (>= GOPCacheMaxBytes)
//	}
//	func (s *Stream) SetTracks(t Tracks)                        // source declares tracks (each run)
//	func (s *Stream) Tracks() Tracks                            // zero Tracks until declared
//	func (s *Stream) WaitTracks(ctx context.Context) (Tracks, error)
//	func (s *Stream) WriteH264(pts time.Duration, au [][]byte)  // one access unit, NALUs without start codes
//	func (s *Stream) WriteAudio(pts time.Duration, frame []byte) // one encoded audio frame
//	func (s *Stream) Discontinuity()                            // source restarted / file looped: rebase timestamps
//	func (s *Stream) Subscribe(id string, o SubscribeOptions) (*Subscriber, error) // ErrNoTracks, ErrClosed
//	func (s *Stream) RecentVideo(seq uint16) *Packet             // a recent video packet by hub seq, for NACKs; nil if gone; lock-free
//	func (s *Stream) Ring() *Ring                               // the stream's history of units
//	func (s *Stream) Units(since time.Duration) []*Unit         // = s.Ring().Units(since)
//	func (s *Stream) SetKeyframeRequester(f func())             // a publisher's "send a PLI to my peer"; nil clears
//	func (s *Stream) RequestKeyframe()                          // calls it, at most once per 500 ms, without locks held
//	func (s *Stream) Stats() StreamStats
//	func (s *Stream) Close()
//
//	func (r *Ring) Units(since time.Duration) []*Unit // from the keyframe at or before PTS since (see ring.go)
//	func (r *Ring) GOP() []*Unit                      // FromCache copies of the video units since the latest keyframe
//	func (r *Ring) Video(seq uint16) *Packet          // = Stream.RecentVideo
//	func (r *Ring) Stats() RingStats
//
//	func (sub *Subscriber) Read(ctx context.Context, dst []*Unit) (int, error) // blocks for >=1 unit; ErrClosed
//	func (sub *Subscriber) Stats() SubscriberStats
//	func (sub *Subscriber) Close()
//
//	func NewSupervisor(src Source, st *Stream, cfg SupervisorConfig, log *slog.Logger) *Supervisor
//	type SupervisorConfig struct {
//	    MinBackoff, MaxBackoff time.Duration // defaults 500ms, 10s; jittered
//	    GracePeriod            time.Duration // default 10s: Reconnecting longer than this = failed
//	    OnStateChange          func(SourceState, error) // optional, called without locks held
//	}
//	func (sv *Supervisor) Run(ctx context.Context) error // until ctx done
//	func (sv *Supervisor) Status() SupervisorStatus       // non-blocking snapshot
//	type SupervisorStatus struct { State SourceState; Since time.Time; LastError string; Reconnects uint64; Failed bool /* reconnecting past grace */ }
