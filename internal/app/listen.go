package app

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/icey/icey-server/config"
)

// listeners are every socket the server needs, bound before anything starts
// so a conflict is reported at once and nothing half-starts.
type listeners struct {
	http    net.Listener
	media   net.PacketConn
	turnUDP net.PacketConn
	turnTCP net.Listener
	metrics net.Listener // optional metrics.listen
	pprof   net.Listener // optional --pprof-listen
}

func (l *listeners) Close() {
	// A nil interface field converts to a nil Closer, so the check is sound.
	for _, c := range []interface{ Close() error }{l.http, l.media, l.turnUDP, l.turnTCP, l.metrics, l.pprof} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// bindError is a port conflict, printed as the spec words it.
type bindError struct {
	what, addr string
	err        error
}

func (e *bindError) Error() string {
	return fmt.Sprintf("cannot bind %s on %s: %v (%s)", e.what, e.addr, e.err, bindHint(e.what))
}

// bindHint says which setting moves the listener that could not bind.
func bindHint(what string) string {
	switch {
	case what == "HTTP":
		return "use another port with --port, ICEY_PORT or http.port"
	case strings.HasPrefix(what, "WebRTC"):
		return "use another port with --webrtc-port, ICEY_WEBRTC_PORT or webrtc.port"
	case what == "RTSP":
		return "use another port with --rtsp-port, ICEY_RTSP_PORT or rtsp.port, or turn the RTSP re-serve off"
	case strings.HasPrefix(what, "TURN"):
		return "use another port with --turn-port, ICEY_TURN_PORT or turn.port, or run without TURN with --no-turn"
	case what == "metrics":
		return "change metrics.listen (ICEY_METRICS_LISTEN)"
	default:
		return "change --pprof-listen (ICEY_PPROF_LISTEN)"
	}
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// bindAll binds the HTTP (TCP), WebRTC media (UDP) and TURN (UDP+TCP)
// sockets. On error everything bound so far is closed again.
func bindAll(cfg config.Config) (*listeners, error) {
	host := cfg.HTTP.Host
	l := &listeners{}
	// Same number for two listeners of one protocol can never work.
	if cfg.TURN.Enabled && cfg.TURN.Port == cfg.HTTP.Port {
		return nil, &bindError{"TURN (TCP)", hostPort(host, cfg.TURN.Port), fmt.Errorf("port also configured for HTTP (turn.port = http.port)")}
	}
	if cfg.TURN.Enabled && cfg.TURN.Port == cfg.WebRTC.Port {
		return nil, &bindError{"TURN (UDP)", hostPort(host, cfg.TURN.Port), fmt.Errorf("port also configured for WebRTC media (turn.port = webrtc.port)")}
	}
	if cfg.RTSP.Enabled && (cfg.RTSP.Port == cfg.HTTP.Port || cfg.TURN.Enabled && cfg.RTSP.Port == cfg.TURN.Port) {
		return nil, &bindError{"RTSP", hostPort(host, cfg.RTSP.Port), fmt.Errorf("port also configured for HTTP or TURN (rtsp.port)")}
	}
	if cfg.RTSP.Enabled {
		// The RTSP server binds its own socket when it starts; probing here
		// reports a conflict with the other ports, before anything starts.
		probe, err := net.Listen("tcp", hostPort(host, cfg.RTSP.Port))
		if err != nil {
			return nil, &bindError{"RTSP", hostPort(host, cfg.RTSP.Port), sysErr(err)}
		}
		_ = probe.Close()
	}
	var err error
	if l.http, err = net.Listen("tcp", hostPort(host, cfg.HTTP.Port)); err != nil {
		return nil, &bindError{"HTTP", hostPort(host, cfg.HTTP.Port), sysErr(err)}
	}
	if l.media, err = net.ListenPacket("udp", hostPort(host, cfg.WebRTC.Port)); err != nil {
		l.Close()
		return nil, &bindError{"WebRTC media (UDP)", hostPort(host, cfg.WebRTC.Port), sysErr(err)}
	}
	if cfg.TURN.Enabled {
		if l.turnUDP, err = net.ListenPacket("udp", hostPort(host, cfg.TURN.Port)); err != nil {
			l.Close()
			return nil, &bindError{"TURN (UDP)", hostPort(host, cfg.TURN.Port), sysErr(err)}
		}
		if l.turnTCP, err = net.Listen("tcp", hostPort(host, cfg.TURN.Port)); err != nil {
			l.Close()
			return nil, &bindError{"TURN (TCP)", hostPort(host, cfg.TURN.Port), sysErr(err)}
		}
	}
	if cfg.Metrics.Listen != "" {
		if l.metrics, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			l.Close()
			return nil, &bindError{"metrics", cfg.Metrics.Listen, sysErr(err)}
		}
	}
	if cfg.PprofListen != "" {
		if l.pprof, err = net.Listen("tcp", cfg.PprofListen); err != nil {
			l.Close()
			return nil, &bindError{"pprof", cfg.PprofListen, sysErr(err)}
		}
	}
	return l, nil
}

// sysErr keeps the OS reason ("address already in use") without repeating
// the address.
func sysErr(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
