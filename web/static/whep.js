// Minimal WHEP player (the full Symple UI replaces this page).
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  if (token) { params.delete("token"); history.replaceState(null, "", location.pathname + (params.size ? "?" + params : "")); }
  const $ = (id) => document.getElementById(id);
  const auth = token ? { Authorization: "Bearer " + token } : {};
  let pc = null, location_ = null;
  const setState = (s) => { $("state").textContent = s; };

  async function watch() {
    $("watch").disabled = true;
    try {
      const cfg = await (await fetch("/api/config", { headers: auth })).json().catch(() => ({}));
      const iceServers = [];
      if (cfg.turn && cfg.turn.enabled) {
        iceServers.push({ urls: [`turn:${cfg.turn.host}:${cfg.turn.port}`], username: cfg.turn.username, credential: cfg.turn.credential });
      }
      pc = new RTCPeerConnection({ iceServers });
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.ontrack = (e) => { $("video").srcObject = e.streams[0] || new MediaStream([e.track]); };
      pc.onconnectionstatechange = () => setState(pc.connectionState);
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((res) => { if (pc.iceGatheringState === "complete") res(); else { pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && res(); setTimeout(res, 2000); } });
      const resp = await fetch("/whep", { method: "POST", headers: { "Content-Type": "application/sdp", ...auth }, body: pc.localDescription.sdp });
      if (resp.status !== 201) throw new Error(`WHEP ${resp.status}: ${await resp.text()}`);
      location_ = resp.headers.get("Location");
      await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
      $("stop").disabled = false;
    } catch (err) {
      setState("error: " + err.message);
      $("watch").disabled = false;
    }
  }
  async function stop() {
    if (location_) fetch(location_, { method: "DELETE", headers: auth }).catch(() => {});
    if (pc) pc.close();
    pc = null; location_ = null;
    $("stop").disabled = true; $("watch").disabled = false; setState("idle");
  }
  $("watch").onclick = watch;
  $("stop").onclick = stop;
})();
