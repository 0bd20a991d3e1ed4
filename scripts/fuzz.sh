#!/usr/bin/env bash
# Runs every Go fuzz target of the module for DURATION each (default 3s):
#   scripts/fuzz.sh [DURATION]
#   scripts/fuzz.sh --list      (print the targets found, run nothing)
# Targets are discovered from `func FuzzXxx(f *testing.F)` in *_test.go
# files, so a new target is fuzzed without editing this script. Each runs
# alone (`go test -fuzz` takes one target per invocation) with
#   go test -run '^$' -fuzz '^Name$' -fuzztime DURATION -parallel N ./pkg
# (plus -fuzzminimizetime, see FUZZ_MINIMIZE)
# and the summary lists the executions per target. A failing target leaves
# its crasher in pkg/testdata/fuzz/Name/ (go's doing; check it in as a
# regression test once fixed); the script prints the path and exits 1.
#
# Environment:
#   FUZZ_PARALLEL  fuzzing workers per target (default 2)
#   FUZZ_MINIMIZE  -fuzzminimizetime (default 5s): go minimizes every input
#                  that adds coverage, up to 60 s by default, which can eat a
#                  short run's whole budget when coverage is not
#                  deterministic (math/rand inside the code under test)
#   FUZZ_MATCH     extended regexp: only targets whose "pkg.Name" matches
#   GO             the go command (default go)
# Needs no network once modules are downloaded (run it with GOPROXY=off
# GOFLAGS=-mod=readonly inside a loopback-only namespace). It writes nothing
# outside go's cache except crashers.
set -uo pipefail

list=false
if [ "${1:-}" = "--list" ] || [ "${1:-}" = "-l" ]; then
	list=true
	shift
fi
duration=${1:-3s}
parallel=${FUZZ_PARALLEL:-2}
minimize=${FUZZ_MINIMIZE:-5s}
match=${FUZZ_MATCH:-}
gocmd=${GO:-go}

cd "$(dirname "$0")/.." || exit 2
if [ ! -f go.mod ]; then
	echo "fuzz: no go.mod in $(pwd)" >&2
	exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/icey-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# Discovery: "dir name" lines, sorted. Skips testdata, vendor and hidden
# directories.
find . \( -name testdata -o -name vendor -o -name 'node_modules' -o -name '.?*' \) -prune -o \
	-type f -name '*_test.go' -print 2>/dev/null |
	while IFS= read -r file; do
		sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\).*/\1/p' "$file" |
			while IFS= read -r name; do
				printf '%s %s\n' "$(dirname "$file")" "$name"
			done
	done | sort -u >"$tmp/targets"

if [ -n "$match" ]; then
	: >"$tmp/matched"
	while read -r dir name; do
		if printf '%s.%s\n' "${dir#./}" "$name" | grep -Eq -- "$match"; then
			printf '%s %s\n' "$dir" "$name" >>"$tmp/matched"
		fi
	done <"$tmp/targets"
	mv "$tmp/matched" "$tmp/targets"
fi

total=$(wc -l <"$tmp/targets")
if [ "$total" -eq 0 ]; then
	echo "fuzz: no fuzz targets found${match:+ matching $match}" >&2
	exit 1
fi
if $list; then
	sed 's|^\./||' "$tmp/targets"
	exit 0
fi
echo "fuzz: $total targets, $duration each, $parallel workers"

failed=0
: >"$tmp/summary"
while read -r dir name; do
	log="$tmp/$(printf '%s_%s' "$dir" "$name" | tr -c 'A-Za-z0-9_\n' '_').log"
	corpus="$dir/testdata/fuzz/$name"
	ls -1 "$corpus" 2>/dev/null | sort >"$tmp/before"
	start=$(date +%s)
	fuzz_once() {
		"$gocmd" test -run '^$' -fuzz "^${name}\$" -fuzztime "$duration" -fuzzminimizetime "$minimize" \
			-parallel "$parallel" "$dir" \
			</dev/null >"$log" 2>&1
	}
	fuzz_once
	rc=$?
	# Go's fuzzer can end a run with "context deadline exceeded" and no
	# crasher when a worker is busy as the time runs out (a harness
	# failure, not a finding: a finding writes a crasher). Run such a
	# target once more; the second result stands.
	if [ "$rc" -ne 0 ] && grep -q 'context deadline exceeded' "$log" &&
		[ -z "$(ls -1 "$corpus" 2>/dev/null | sort | comm -13 "$tmp/before" -)" ]; then
		echo "fuzz: $dir $name: the fuzzer timed out without a finding; running it again"
		fuzz_once
		rc=$?
	fi
	secs=$(($(date +%s) - start))
	# The last progress line carries the total: "fuzz: elapsed: 3s, execs: 12345 (4115/sec), ...".
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
	execs=${execs:--}
	status=ok
	if [ "$rc" -ne 0 ]; then
		status=FAIL
	elif [ "$execs" = "-" ] || grep -q 'no fuzz tests to fuzz' "$log"; then
		status="FAIL(not fuzzed)"
		rc=1
	fi
	printf '%-28s %-34s %-16s %12s execs %5ss\n' "${dir#./}" "$name" "$status" "$execs" "$secs" | tee -a "$tmp/summary"
	if [ "$rc" -ne 0 ]; then
		failed=$((failed + 1))
		echo "---- $dir $name output (last 60 lines) ----"
		tail -n 60 "$log"
		ls -1 "$corpus" 2>/dev/null | sort | comm -13 "$tmp/before" - | while IFS= read -r f; do
			echo "fuzz: new crasher $corpus/$f (reproduce: go test -run '^$name/$f\$' $dir)"
		done
		echo "----"
	fi
done <"$tmp/targets"

echo
echo "fuzz summary ($duration per target):"
cat "$tmp/summary"
if [ "$failed" -gt 0 ]; then
	echo "fuzz: $failed of $total targets FAILED" >&2
	exit 1
fi
echo "fuzz: all $total targets passed"
