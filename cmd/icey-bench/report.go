package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// writeTable prints the human-readable report of one run.
func (r *result) writeTable(w io.Writer) {
	if r.Floor != nil {
		r.writeFloorTable(w)
		return
	}
	fmt.Fprintf(w, "icey-bench %s  %s  viewers=%d ramp=%g/s video-only=%v window=%.1fs\n",
		r.Label, r.URL, r.Viewers, r.Ramp, r.VideoOnly, r.WindowS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  connected\t%d\tfailed\t%d (503: %d)\tdropped\t%d\n", r.Connected, r.Failed, r.Rejected, r.Dropped)
	fmt.Fprintf(tw, "  packets\t%d\tbytes\t%d\tloss\t%.3f %% (%d of %d; whole run %.3f %%)\n",
		r.Packets, r.Bytes, r.LossPct, r.Lost, r.Expected, r.RunLossPct)
	fmt.Fprintf(tw, "  gaps (NACK %v)\twindow %.3f %%\tunrecovered %.3f %%\trun: gaps %d (%.3f %%), recovered %d, unrecovered %d (%.3f %%), duplicates %d\n",
		r.NACK, r.GapPct, r.UnrecoveredPct, r.RunGaps, r.RunGapPct, r.RunRecovered, r.RunUnrecovered, r.RunUnrecoveredPct, r.RunDuplicates)
	fmt.Fprintf(tw, "  Mb/s per viewer\t%.3f\tMb/s total\t%.1f\tUDP buffer drops\trcv %d, snd %d (whole run, this netns); viewer SO_RCVBUF %d\n",
		r.MbpsPerViewer, r.MbpsTotal, r.UDPRcvbufErrors, r.UDPSndbufErrors, r.RcvbufBytes)
	fmt.Fprintf(tw, "  join->first packet\tp50 %.0f ms\tp95 %.0f ms\tmax %.0f ms\t(n=%d)\n",
		r.FirstPacket.P50, r.FirstPacket.P95, r.FirstPacket.Max, r.FirstPacket.N)
	fmt.Fprintf(tw, "  join->first IDR\tp50 %.0f ms\tp95 %.0f ms\tmax %.0f ms\t(n=%d, none: %d)\n",
		r.FirstIDR.P50, r.FirstIDR.P95, r.FirstIDR.Max, r.FirstIDR.N, r.NoIDR)
	if s := r.Server; s != nil {
		if s.SampleErrorsSeen != "" {
			fmt.Fprintf(tw, "  server pid %d\t%s\t\t\t\n", s.PID, s.SampleErrorsSeen)
		} else {
			fmt.Fprintf(tw, "  server CPU\t%.3f ms/viewer-s\t%.1f %% of a core\t%.3f µs/packet delivered\t\n", s.CPUMsPerViewerS, s.CPUPct, s.USPerPacket)
			fmt.Fprintf(tw, "  server RSS\t%.1f MB\t(baseline %.1f MB)\t%.3f MB/viewer\t\n", s.RSSMB, s.RSSBaselineMB, s.RSSPerViewerMB)
		}
	}
	fmt.Fprintf(tw, "  generator CPU\t%.3f ms/viewer-s\t%.1f %% of a core\t%.3f µs/packet received\t\n", r.Generator.CPUMsPerViewerS, r.Generator.CPUPct, r.Generator.USPerPacket)
	tw.Flush()
	for _, k := range sortedKeys(r.Errors) {
		fmt.Fprintf(w, "  error x%d: %s\n", r.Errors[k], k)
	}
}

// writeFloorTable prints a floor measurement in the style of a run.
func (r *result) writeFloorTable(w io.Writer) {
	f := r.Floor
	fmt.Fprintf(w, "icey-bench %s  %s, %d-byte payloads (%d on the wire), %d packets per frame at %d fps, gso=%v  viewers=%d window=%.1fs\n",
		r.Label, f.Profile, f.PayloadBytes, f.PacketBytes, f.PacketsPerFrame, floorFPS, f.GSO, r.Viewers, r.WindowS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  packets\t%d\tsend calls\t%d\tpackets/viewer-s\t%.1f\n", r.Packets, f.Sends, f.PacketsPerViewerS)
	fmt.Fprintf(tw, "  Mb/s per viewer\t%.3f\tMb/s total\t%.1f\treceived\t%d of %d sent (loss %.3f %%, warm-up included)\n",
		r.MbpsPerViewer, r.MbpsTotal, f.ReceivedRun, f.SentRun, r.RunLossPct)
	if s := r.Server; s != nil {
		fmt.Fprintf(tw, "  sender CPU\t%.3f ms/viewer-s\t%.1f %% of a core\t%.3f µs/packet\t\n", s.CPUMsPerViewerS, s.CPUPct, s.USPerPacket)
	}
	tw.Flush()
}

// writeJSON appends the result as one JSON line to path ("-" = stdout).
func (r *result) writeJSON(path string, stdout io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printSummary prints one row per JSON line of a results file, so a bench
// session reads as a single table. Floor lines fill the server columns
// with the ideal sender's figures. vs, when "a,b", adds a table of the
// ratios a÷b for every pair of labels a-X and b-X at the same viewer count.
func printSummary(path, vs string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var rows []result
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // tolerate foreign or partial lines
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "label\tviewers\tconn\tfail\tloss%\tgap%\trun loss%\trun gap%\trun unrec%\tudp drops\tMb/s/v\tpkt p50\tIDR p50\tIDR p95\tIDR max\tsrv us/pkt\tsrv ms/v-s\tsrv core%\tMB/viewer\tgen us/pkt\tgen ms/v-s\tgen core%\t\n")
	for _, r := range rows {
		srvUs, srvMs, srvPct, rssV := "-", "-", "-", "-"
		if s := r.Server; s != nil && s.SampleErrorsSeen == "" {
			srvUs = fmt.Sprintf("%.3f", s.USPerPacket)
			srvMs = fmt.Sprintf("%.3f", s.CPUMsPerViewerS)
			srvPct = fmt.Sprintf("%.0f", s.CPUPct)
			rssV = fmt.Sprintf("%.3f", s.RSSPerViewerMB)
		}
		if r.Floor != nil {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t%.3f\t-\t-\t-\t%.2f\t-\t-\t-\t-\t%s\t%s\t%s\t-\t-\t-\t-\t\n",
				r.Label, r.Viewers, r.RunLossPct, r.MbpsPerViewer, srvUs, srvMs, srvPct)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%.3f\t%.3f\t%.0f\t\n",
			r.Label, r.Viewers, r.Connected, r.Failed, r.LossPct, r.GapPct, r.RunLossPct, r.RunGapPct, r.RunUnrecoveredPct, r.UDPRcvbufErrors+r.UDPSndbufErrors, r.MbpsPerViewer,
			r.FirstPacket.P50, r.FirstIDR.P50, r.FirstIDR.P95, r.FirstIDR.Max,
			srvUs, srvMs, srvPct, rssV, r.Generator.USPerPacket, r.Generator.CPUMsPerViewerS, r.Generator.CPUPct)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if vs == "" {
		return nil
	}
	a, b, _ := strings.Cut(vs, ",")
	return printRatios(rows, a, b, w)
}

// printRatios prints, for every result labelled a-X with a result labelled
// b-X at the same viewer count (the last of each, if repeated), the ratios
// a÷b of the server's CPU per packet, CPU per viewer-second and RSS per
// viewer, next to the floors measured at that viewer count.
func printRatios(rows []result, a, b string, w io.Writer) error {
	type key struct {
		rest    string
		viewers int
	}
	bs := map[key]*serverResult{}
	floors := map[int][]string{}
	for _, r := range rows {
		if r.Floor != nil && r.Server != nil {
			floors[r.Viewers] = append(floors[r.Viewers], fmt.Sprintf("%s %.3f", r.Label, r.Server.USPerPacket))
			continue
		}
		if rest, ok := strings.CutPrefix(r.Label, b+"-"); ok && r.Server != nil && r.Server.SampleErrorsSeen == "" {
			bs[key{rest, r.Viewers}] = r.Server
		}
	}
	ratio := func(x, y float64) string {
		if y == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", x/y)
	}
	fmt.Fprintf(w, "\n# %s ÷ %s (server figures over the same window; floors in µs/packet)\n", a, b)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "variant\tviewers\t%s us/pkt\t%s us/pkt\tus/pkt ratio\t%s ms/v-s\t%s ms/v-s\tms/v-s ratio\t%s MB/v\t%s MB/v\tMB/v ratio\tfloors\t\n", a, b, a, b, a, b)
	for _, r := range rows {
		rest, ok := strings.CutPrefix(r.Label, a+"-")
		if !ok || r.Floor != nil || r.Server == nil || r.Server.SampleErrorsSeen != "" {
			continue
		}
		o := bs[key{rest, r.Viewers}]
		if o == nil {
			continue
		}
		s := r.Server
		fl := strings.Join(floors[r.Viewers], ", ")
		if fl == "" {
			fl = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%s\t%.3f\t%.3f\t%s\t%.3f\t%.3f\t%s\t%s\t\n",
			rest, r.Viewers, s.USPerPacket, o.USPerPacket, ratio(s.USPerPacket, o.USPerPacket),
			s.CPUMsPerViewerS, o.CPUMsPerViewerS, ratio(s.CPUMsPerViewerS, o.CPUMsPerViewerS),
			s.RSSPerViewerMB, o.RSSPerViewerMB, ratio(s.RSSPerViewerMB, o.RSSPerViewerMB), fl)
	}
	return tw.Flush()
}
