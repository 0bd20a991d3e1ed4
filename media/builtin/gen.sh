#!/bin/sh
# Regenerates testclip.mp4, the clip embedded in the binary as the built-in
# test stream. Run from this directory (`go generate ./media/builtin`); needs
# ffmpeg with libx264, libopus and drawtext (Debian's ffmpeg 5.1 has them).
#
# Choices, all for WebRTC playback without transcoding:
#   - H.264 Constrained Baseline (no B-frames), 640x360, 30 fps, a keyframe
#     every 30 frames (GOP 1 s) so a joining viewer never waits long, ~500 kbit/s;
#   - Opus 48 kHz stereo: a quiet 440 Hz tone plus an 880 Hz beep during the
#     first 100 ms of every second, so audio/video sync is audible;
#   - exactly 6 s of both (180 frames, 300 Opus frames of 20 ms) so the loop
#     is seamless: the beep and the on-screen seconds restart together;
#   - +faststart puts moov first; no edit-list tricks are needed by the reader.
set -eu
DUR=6
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=640x360:rate=30,drawtext=text='icey builtin  %{pts\:hms}':x=16:y=h-th-20:fontsize=26:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=6" \
  -f lavfi -i "aevalsrc=0.15*sin(2*PI*440*t)+0.35*sin(2*PI*880*t)*lt(mod(t\,1)\,0.1):s=48000:c=stereo" \
  -t "$DUR" \
  -c:v libx264 -profile:v baseline -level 3.1 -preset medium -pix_fmt yuv420p \
  -g 30 -keyint_min 30 -sc_threshold 0 -bf 0 \
  -b:v 500k -maxrate 600k -bufsize 600k -x264-params nal-hrd=none \
  -c:a libopus -b:a 48k -ac 2 -ar 48000 -frame_duration 20 \
  -map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
  -movflags +faststart \
  testclip.mp4
