package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

// writeTable prints the human-readable report of one run.
func (r *result) writeTable(w io.Writer) {
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
			fmt.Fprintf(tw, "  server CPU\t%.3f ms/viewer-s\t%.1f %% of a core\t\t\n", s.CPUMsPerViewerS, s.CPUPct)
			fmt.Fprintf(tw, "  server RSS\t%.1f MB\t(baseline %.1f MB)\t%.3f MB/viewer\t\n", s.RSSMB, s.RSSBaselineMB, s.RSSPerViewerMB)
		}
	}
	fmt.Fprintf(tw, "  generator CPU\t%.3f ms/viewer-s\t%.1f %% of a core\t\t\n", r.Generator.CPUMsPerViewerS, r.Generator.CPUPct)
	tw.Flush()
	for _, k := range sortedKeys(r.Errors) {
		fmt.Fprintf(w, "  error x%d: %s\n", r.Errors[k], k)
	}
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
// session reads as a single table.
func printSummary(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "label\tviewers\tconn\tfail\tloss%\tgap%\trun loss%\trun gap%\trun unrec%\tudp drops\tMb/s/v\tpkt p50\tIDR p50\tIDR p95\tIDR max\tsrv ms/v-s\tsrv core%\tMB/viewer\tgen ms/v-s\tgen core%\t\n")
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // tolerate foreign or partial lines
		}
		srvMs, srvPct, rssV := "-", "-", "-"
		if s := r.Server; s != nil && s.SampleErrorsSeen == "" {
			srvMs = fmt.Sprintf("%.3f", s.CPUMsPerViewerS)
			srvPct = fmt.Sprintf("%.0f", s.CPUPct)
			rssV = fmt.Sprintf("%.3f", s.RSSPerViewerMB)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%.3f\t%.0f\t\n",
			r.Label, r.Viewers, r.Connected, r.Failed, r.LossPct, r.GapPct, r.RunLossPct, r.RunGapPct, r.RunUnrecoveredPct, r.UDPRcvbufErrors+r.UDPSndbufErrors, r.MbpsPerViewer,
			r.FirstPacket.P50, r.FirstIDR.P50, r.FirstIDR.P95, r.FirstIDR.Max,
			srvMs, srvPct, rssV, r.Generator.CPUMsPerViewerS, r.Generator.CPUPct)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return tw.Flush()
}
