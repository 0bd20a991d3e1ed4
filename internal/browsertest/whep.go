package browsertest

import (
	"encoding/json"
	"fmt"
	"time"
)

// whepClientJS installs window.whepTest: a minimal WHEP viewer written the
// way a web page would, so a test exercises the browser's real WebRTC stack
// (ICE, DTLS, SRTP, jitter buffer, decoder) against the server. It offers
// without trickle: it waits for ICE gathering (instant on loopback, one TURN
// allocation with a relay policy) and POSTs the complete offer.
const whepClientJS = `(() => {
  if (window.whepTest) return true;
  const T = {pc: null, location: null, gen: 0, t0: 0, connectedAt: 0, firstFrameAt: 0, firstDecodedAt: 0};
  T.video = () => {
    let v = document.getElementById("whep-video");
    if (!v) {
      document.body.innerHTML = "";
      document.body.style.cssText = "margin:0;background:#222;color:#eee;font:14px monospace";
      v = document.createElement("video");
      v.id = "whep-video"; v.autoplay = true; v.playsInline = true; v.muted = true;
      v.style.cssText = "width:640px;height:360px;background:#000;display:block";
      document.body.appendChild(v);
      const s = document.createElement("pre"); s.id = "whep-status"; document.body.appendChild(s);
    }
    return v;
  };
  T.close = async () => {
    T.gen++;
    if (T.pc) { T.pc.close(); T.pc = null; }
    const loc = T.location; T.location = null;
    if (loc) { try { await fetch(loc, {method: "DELETE"}); } catch (e) {} }
    const v = document.getElementById("whep-video"); if (v) v.srcObject = null;
    return true;
  };
  T.play = async (o) => {
    o = o || {};
    await T.close();
    const gen = T.gen, v = T.video();
    const pc = new RTCPeerConnection({iceServers: o.iceServers || [], iceTransportPolicy: o.policy || "all"});
    T.pc = pc; T.t0 = 0; T.connectedAt = 0; T.firstFrameAt = 0; T.firstFrameMeta = null; T.firstDecodedAt = 0;
    const ms = new MediaStream();
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    pc.ontrack = (e) => {
      ms.addTrack(e.track);
      if (v.srcObject !== ms) v.srcObject = ms;
      v.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (gen === T.gen && pc.connectionState === "connected" && !T.connectedAt) T.connectedAt = performance.now();
    };
    const onFrame = (now, meta) => {
      if (gen !== T.gen || T.firstFrameAt) return;
      T.firstFrameAt = performance.now(); T.firstFrameMeta = meta;
    };
    v.requestVideoFrameCallback(onFrame);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((res) => {
      if (pc.iceGatheringState === "complete") return res();
      const to = setTimeout(res, o.gatherTimeoutMs || 5000);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(to); res(); }
      });
    });
    const headers = {"Content-Type": "application/sdp"};
    if (o.token) headers["Authorization"] = "Bearer " + o.token;
    T.t0 = performance.now();
    const r = await fetch(o.url || "/whep", {method: "POST", headers, body: pc.localDescription.sdp});
    const body = await r.text();
    if (r.status !== 201) throw new Error("WHEP POST answered " + r.status + ": " + body);
    T.location = r.headers.get("Location");
    await pc.setRemoteDescription({type: "answer", sdp: body});
    return {location: T.location || ""};
  };
  T.stats = async () => {
    const v = T.video(), pc = T.pc;
    const out = {videoWidth: v.videoWidth, videoHeight: v.videoHeight, framesDecoded: 0, keyFramesDecoded: 0, videoPackets: 0,
      videoPacketsLost: 0, pliCount: 0, nackCount: 0,
      audioPackets: 0, audioSamples: 0, videoCodec: "", audioCodec: "", connectionState: pc ? pc.connectionState : "closed",
      localCandidateType: "", relayProtocol: "", localAddress: "", remoteCandidateType: "", remoteAddress: "", pairState: ""};
    if (!pc) return out;
    const rep = await pc.getStats(), byId = new Map();
    rep.forEach((s) => byId.set(s.id, s));
    let pairId = "";
    rep.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        out.framesDecoded = s.framesDecoded || 0; out.videoPackets = s.packetsReceived || 0;
        out.videoPacketsLost = s.packetsLost || 0; out.pliCount = s.pliCount || 0; out.nackCount = s.nackCount || 0;
        out.keyFramesDecoded = s.keyFramesDecoded || 0;
        if (byId.get(s.codecId)) out.videoCodec = byId.get(s.codecId).mimeType;
      }
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        out.audioPackets = s.packetsReceived || 0; out.audioSamples = s.totalSamplesReceived || 0;
        if (byId.get(s.codecId)) out.audioCodec = byId.get(s.codecId).mimeType;
      }
      if (s.type === "transport" && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId;
    });
    if (!pairId) rep.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pairId = s.id; });
    const pair = byId.get(pairId);
    if (pair) {
      const l = byId.get(pair.localCandidateId) || {}, r = byId.get(pair.remoteCandidateId) || {};
      out.pairState = pair.state;
      out.localCandidateType = l.candidateType || ""; out.relayProtocol = l.relayProtocol || "";
      out.localAddress = (l.address || "") + ":" + (l.port || ""); out.remoteCandidateType = r.candidateType || "";
      out.remoteAddress = (r.address || "") + ":" + (r.port || "");
    }
    const st = document.getElementById("whep-status");
    if (st) st.textContent = JSON.stringify(out, null, 1);
    return out;
  };
  // join plays and waits for the first video frame; times in ms from just
  // before the POST. firstFrameMs is the first requestVideoFrameCallback,
  // firstDecodedMs the first getStats with framesDecoded > 0 (polled).
  T.join = async (o, timeoutMs) => {
    await T.play(o);
    const pc = T.pc, until = performance.now() + (timeoutMs || 10000);
    while (performance.now() < until && (!T.firstFrameAt || !T.firstDecodedAt)) {
      if (!T.firstDecodedAt) {
        let f = 0;
        (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") f = s.framesDecoded || 0; });
        if (f > 0) T.firstDecodedAt = performance.now();
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    const rel = (x) => x ? x - T.t0 : -1;
    const m = T.firstFrameMeta || {};
    return {connectedMs: rel(T.connectedAt), firstFrameMs: rel(T.firstFrameAt), firstDecodedMs: rel(T.firstDecodedAt),
      firstFrameReceivedMs: rel(m.receiveTime), firstFrameRTPTimestamp: m.rtpTimestamp || 0, firstFrameWidth: m.width || 0};
  };
  window.whepTest = T;
  return true;
})()`

// ICEServer is an RTCIceServer of the page's RTCPeerConnection.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// WHEPOptions configure the page's WHEP viewer.
type WHEPOptions struct {
	URL        string      `json:"url,omitempty"` // default "/whep" at the page's origin
	Token      string      `json:"token,omitempty"`
	ICEServers []ICEServer `json:"iceServers,omitempty"`
	Policy     string      `json:"policy,omitempty"` // iceTransportPolicy: "all" (default) or "relay"
}

// WHEPStats is what the page's getStats() and video element say.
type WHEPStats struct {
	VideoWidth          int     `json:"videoWidth"`
	VideoHeight         int     `json:"videoHeight"`
	FramesDecoded       int64   `json:"framesDecoded"`
	KeyFramesDecoded    int64   `json:"keyFramesDecoded"`
	VideoPackets        int64   `json:"videoPackets"`
	VideoPacketsLost    int64   `json:"videoPacketsLost"`
	PLICount            int64   `json:"pliCount"`  // keyframe requests the browser sent
	NACKCount           int64   `json:"nackCount"` // retransmission requests it sent
	AudioPackets        int64   `json:"audioPackets"`
	AudioSamples        float64 `json:"audioSamples"`
	VideoCodec          string  `json:"videoCodec"`
	AudioCodec          string  `json:"audioCodec"`
	ConnectionState     string  `json:"connectionState"`
	PairState           string  `json:"pairState"`
	LocalCandidateType  string  `json:"localCandidateType"` // of the selected pair: host, srflx, prflx, relay
	RelayProtocol       string  `json:"relayProtocol"`      // udp, tcp or tls when local is relay
	LocalAddress        string  `json:"localAddress"`
	RemoteCandidateType string  `json:"remoteCandidateType"`
	RemoteAddress       string  `json:"remoteAddress"`
}

// JoinTiming is how long a WHEP join took in the page, in milliseconds from
// just before the POST; -1 when it did not happen within the timeout.
type JoinTiming struct {
	ConnectedMs    float64 `json:"connectedMs"`    // RTCPeerConnection "connected" (ICE + DTLS)
	FirstFrameMs   float64 `json:"firstFrameMs"`   // first requestVideoFrameCallback
	FirstDecodedMs float64 `json:"firstDecodedMs"` // first getStats with framesDecoded > 0 (Chrome caches stats ~50 ms)
	// From the first frame callback's metadata: when its last packet
	// arrived, and its RTP timestamp (non-zero proves a network frame).
	FirstFrameReceivedMs   float64 `json:"firstFrameReceivedMs"`
	FirstFrameRTPTimestamp uint32  `json:"firstFrameRTPTimestamp"`
	FirstFrameWidth        int     `json:"firstFrameWidth"`
}

// InstallWHEP defines the WHEP viewer in the current page (again after each
// navigation). Navigate to the server's origin first so that /whep is
// same-origin.
func (b *Browser) InstallWHEP() error {
	_, err := Eval[bool](b, 10*time.Second, whepClientJS)
	return err
}

// WHEPPlay creates a fresh RTCPeerConnection (closing and DELETEing the
// previous one), POSTs the offer and applies the answer.
func (b *Browser) WHEPPlay(o WHEPOptions) error {
	_, err := Eval[map[string]any](b, 30*time.Second, "whepTest.play("+jsArg(o)+")")
	return err
}

// WHEPStats reads the current stats of the page's viewer.
func (b *Browser) WHEPStats() (WHEPStats, error) {
	return Eval[WHEPStats](b, 10*time.Second, "whepTest.stats()")
}

// WHEPJoin plays and waits up to timeout for the first video frame.
func (b *Browser) WHEPJoin(o WHEPOptions, timeout time.Duration) (JoinTiming, error) {
	return Eval[JoinTiming](b, timeout+30*time.Second,
		fmt.Sprintf("whepTest.join(%s, %d)", jsArg(o), timeout.Milliseconds()))
}

// WHEPClose closes the viewer's connection and DELETEs its WHEP session.
func (b *Browser) WHEPClose() error {
	_, err := Eval[bool](b, 10*time.Second, "whepTest.close()")
	return err
}

func jsArg(v any) string {
	j, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain structs are passed
	}
	return string(j)
}
