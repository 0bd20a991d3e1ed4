package warm

import (
	_ "github.com/bluenviron/gortsplib/v4"
	_ "github.com/bluenviron/gortsplib/v4/pkg/format"
	_ "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	_ "github.com/chromedp/chromedp"
	_ "github.com/gorilla/websocket"
	_ "github.com/pion/turn/v4"
	_ "github.com/pion/webrtc/v4"
	_ "github.com/prometheus/client_golang/prometheus"
)
