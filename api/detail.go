package api

import (
	"net/http"
	"strings"
	"time"
)

// Component health states.
const (
	Healthy   = "healthy"
	Unhealthy = "unhealthy"
	Disabled  = "disabled" // not used in this mode/config; never fails a probe
)

// Component is one part of the server for detailed health.
type Component struct {
	Name   string `json:"name"`
	Status string `json:"status"` // healthy | unhealthy | disabled
	Detail string `json:"detail,omitempty"`
}

// ComponentNames are the components of detailed health, in order.
var ComponentNames = []string{"http", "webrtc", "turn", "source", "recordings", "signaling"}

type detailedHealth struct {
	Status        string            `json:"status"` // healthy | unhealthy
	Product       string            `json:"product"`
	Service       string            `json:"service"`
	Version       string            `json:"version"`
	UptimeSec     int64             `json:"uptimeSec"`
	UptimeSeconds int64             `json:"uptime_seconds"`
	Components    map[string]string `json:"components"`
	Details       []Component       `json:"details"`
}

func (h *Handler) components() []Component {
	if h.c.Components == nil {
		return []Component{{Name: "http", Status: Healthy}}
	}
	return h.c.Components()
}

// healthDetailed answers /api/health?detailed=true. Liveness proper (plain
// /api/health) never depends on components; this view is for humans and
// monitors, so it is 200 with "unhealthy" entries rather than a 503.
func (h *Handler) healthDetailed(w http.ResponseWriter, r *http.Request) {
	up := int64(h.c.Now().Sub(h.c.Started) / time.Second)
	b := detailedHealth{Status: Healthy, Product: Product, Service: Service, Version: h.c.Version,
		UptimeSec: up, UptimeSeconds: up, Components: map[string]string{}}
	for _, c := range h.components() {
		b.Components[c.Name] = c.Status
		b.Details = append(b.Details, c)
		if c.Status == Unhealthy {
			b.Status = Unhealthy
		}
	}
	WriteJSON(w, http.StatusOK, b)
}

// component answers /api/health/<name>: 200 healthy (or disabled), 503 unhealthy.
func (h *Handler) component(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/api/health/")
	for _, c := range h.components() {
		if c.Name == name {
			code := http.StatusOK
			if c.Status == Unhealthy {
				code = http.StatusServiceUnavailable
			}
			WriteJSON(w, code, c)
			return
		}
	}
	WriteError(w, http.StatusNotFound, "not_found")
}

// started is the startup probe: 503 until startup completed, 200 forever after.
func (h *Handler) started(w http.ResponseWriter, r *http.Request) {
	ok := h.c.StartupDone == nil || h.c.StartupDone()
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	WriteJSON(w, code, map[string]any{"started": ok, "product": Product, "service": Service})
}
