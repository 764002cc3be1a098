#!/usr/bin/env python3
"""Checks a Chrome trace written by `train --trace` or `forward --trace`.

The document must be the Trace Event Format that Perfetto opens, and say what
the driver promises (lib/Runtime/driver/Tracing.h):

- {"traceEvents": [...], "displayTimeUnit": "ms"}; every event has the keys
  of its phase with the right types: complete events ("X") name, cat, ts,
  dur, pid, tid, args; metadata ("M") name, pid, tid, args; ts and dur >= 0;
- --ranks distinct pids, each named "rank N" by a process_name event;
- on every rank the top-level spans (cat "step") are --span, in that order,
  not overlapping; every runtime call (cat "op" or "collective") and every
  driver span lies inside one, and the calls of a span last no longer than
  it in all;
- every collective names its group and sends a positive number of bytes;
  within each span every rank runs the same collectives (name, group) the
  same number of times (SPMD: the ranks of a group run the same program),
  and every --collective NAME:GROUP appears.

Prints one line per finding and PASS, or FAIL lines and exits 1.
"""

import argparse
import collections
import json
import sys

# Times are written in microseconds with 3 decimals: allow for the rounding.
SLACK_US = 0.01

REQUIRED = {
    "X": {"name": str, "cat": str, "ph": str, "ts": (int, float),
          "dur": (int, float), "pid": int, "tid": int, "args": dict},
    "M": {"name": str, "ph": str, "pid": int, "tid": int, "args": dict},
}


def check(doc, ranks, spans, collectives):
    """Returns a list of failures (empty when the trace is good)."""
    failures = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["the document is not an object with a traceEvents array"]
    if doc.get("displayTimeUnit") != "ms":
        failures.append(f"displayTimeUnit is {doc.get('displayTimeUnit')!r}, expected 'ms'")
    events = doc["traceEvents"]
    for i, e in enumerate(events):
        keys = REQUIRED.get(e.get("ph")) if isinstance(e, dict) else None
        if keys is None:
            failures.append(f"event {i}: phase {e.get('ph') if isinstance(e, dict) else e!r} "
                            "is neither 'X' nor 'M'")
            continue
        for key, kind in keys.items():
            value = e.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                failures.append(f"event {i} ({e.get('name')}): key {key!r} is {value!r}")
        if e["ph"] == "X" and not failures:
            if e["ts"] < 0 or e["dur"] < 0:
                failures.append(f"event {i} ({e['name']}): ts {e['ts']} dur {e['dur']}")
    if failures:
        return failures

    complete = [e for e in events if e["ph"] == "X"]
    pids = sorted({e["pid"] for e in events})
    if pids != list(range(ranks)):
        failures.append(f"pids {pids}, expected 0..{ranks - 1}")
    names = {e["pid"]: e["args"].get("name") for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    for pid in pids:
        if names.get(pid) != f"rank {pid}":
            failures.append(f"pid {pid} is named {names.get(pid)!r}, expected 'rank {pid}'")

    # Per rank and span: the collectives run, and the calls' time.
    per_span = collections.defaultdict(collections.Counter)
    for pid in pids:
        mine = [e for e in complete if e["pid"] == pid]
        tops = sorted((e for e in mine if e["cat"] == "step"), key=lambda e: e["ts"])
        if [e["name"] for e in tops] != spans:
            failures.append(f"rank {pid}: spans {[e['name'] for e in tops]}, expected {spans}")
            continue
        for a, b in zip(tops, tops[1:]):
            if a["ts"] + a["dur"] > b["ts"] + SLACK_US:
                failures.append(f"rank {pid}: {a['name']} overlaps {b['name']}")
        busy = collections.Counter()
        for e in mine:
            if e["cat"] == "step":
                continue
            inside = [s for s in tops if s["ts"] - SLACK_US <= e["ts"] and
                      e["ts"] + e["dur"] <= s["ts"] + s["dur"] + SLACK_US]
            if not inside:
                failures.append(f"rank {pid}: {e['cat']} {e['name']} at {e['ts']} "
                                "lies in no step span")
                continue
            span = inside[0]["name"]
            if e["cat"] in ("op", "collective"):
                busy[span] += e["dur"]
            if e["cat"] == "collective":
                group, sent = e["args"].get("group"), e["args"].get("bytes")
                if not isinstance(group, str) or not isinstance(sent, int) or sent <= 0:
                    failures.append(f"rank {pid}: collective {e['name']} at {e['ts']} has "
                                    f"group {group!r} and bytes {sent!r}")
                per_span[(span, pid)][(e["name"], group)] += 1
        for s in tops:
            if busy[s["name"]] > s["dur"] + SLACK_US * len(mine):
                failures.append(f"rank {pid}: the calls of {s['name']} last "
                                f"{busy[s['name']]:.3f} us, the span {s['dur']:.3f} us")
    if failures:
        return failures

    for span in spans:
        counts = [per_span[(span, pid)] for pid in pids]
        for pid, c in zip(pids, counts):
            if c != counts[0]:
                failures.append(f"{span}: rank {pid} runs collectives {dict(c)}, "
                                f"rank 0 {dict(counts[0])}")
        for want in collectives:
            name, group = want.split(":")
            if counts[0][(name, group)] == 0:
                failures.append(f"{span}: no {name} over {group} (collectives: "
                                f"{dict(counts[0])})")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trace", help="the trace JSON file")
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--span", action="append", required=True,
                        help="a top-level span, in order, e.g. 'step 2'")
    parser.add_argument("--collective", action="append", default=[],
                        help="NAME:GROUP that every span must contain, e.g. dispatch:ep")
    args = parser.parse_args()
    with open(args.trace) as f:
        doc = json.load(f)
    failures = check(doc, args.ranks, args.span, args.collective)
    events = doc.get("traceEvents", []) if isinstance(doc, dict) else []
    calls = sum(1 for e in events if isinstance(e, dict) and e.get("cat") in ("op", "collective"))
    print(f"{len(events)} events, {calls} runtime calls on {args.ranks} ranks")
    for failure in failures:
        print("FAIL: " + failure)
    print("FAIL" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
