package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/events"
)

// EventSource is the lifecycle event bus.
type EventSource interface {
	Subscribe(buffer int) *events.Sub
}

const eventsKeepalive = 15 * time.Second

var eventsUpgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 4096,
	// Handler.ServeHTTP already refused browser origins other than this
	// server's own (and auth.allowedOrigins), like the Symple WebSocket.
	CheckOrigin: func(*http.Request) bool { return true },
}

// events streams a snapshot, then lifecycle events: Server-Sent Events by
// default, a WebSocket when the request is an upgrade.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	sub := h.c.Events.Subscribe(0)
	defer sub.Close()
	snap := events.Event{Type: events.Snapshot, Time: h.c.Now().UTC()}
	if h.c.Snapshot != nil {
		snap.Data = h.c.Snapshot()
	}
	if websocket.IsWebSocketUpgrade(r) {
		h.eventsWS(w, r, sub, snap)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		WriteError(w, http.StatusInternalServerError, "streaming_unsupported")
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(e events.Event) error {
		b, _ := json.Marshal(e)
		_, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, b)
		fl.Flush()
		return err
	}
	if write(snap) != nil {
		return
	}
	tick := time.NewTicker(eventsKeepalive)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-sub.C:
			if !ok {
				return // fell behind: the client reconnects for a fresh snapshot
			}
			if write(e) != nil {
				return
			}
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (h *Handler) eventsWS(w http.ResponseWriter, r *http.Request, sub *events.Sub, snap events.Event) {
	conn, err := eventsUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered
	}
	defer conn.Close()
	conn.SetReadLimit(1024)
	gone := make(chan struct{})
	go func() { // read only to notice the close
		defer close(gone)
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	send := func(e events.Event) error {
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return conn.WriteJSON(e)
	}
	if send(snap) != nil {
		return
	}
	tick := time.NewTicker(eventsKeepalive)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-sub.C:
			if !ok || send(e) != nil {
				return
			}
		case <-tick.C:
			_ = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
		case <-gone:
			return
		}
	}
}
