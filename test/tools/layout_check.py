#!/usr/bin/env python3
"""Checks the table `moec --mesh auto --explain` prints against moec's own
memory report of each layout it names, compiled the ordinary way.

    layout_check.py MOEC MODEL TABLE DEVICE_BYTES [moec flags ...]

TABLE is the --explain output. The checks:
- the rows are ranked by predicted step time, fastest first;
- exactly one row is chosen, it fits in DEVICE_BYTES, and its memory equals
  `moec MODEL <its flags> --memory-report=json` (within the table's three
  significant digits);
- every row before it does not fit: a row the search planned ("too large")
  matches the memory report, and a row it ruled out by a bound ("> X
  (weights and state)" or "> X (the mesh's least)") needs more than
  DEVICE_BYTES by the memory report too (up to three of each, to stay fast).
The flags after DEVICE_BYTES (e.g. --storage bf16) go to every compile.
"""

import json
import re
import subprocess
import sys

UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def byte_count(text):
    value, unit = text.split()
    return float(value) * UNITS[unit]


def parse(table):
    rows = []
    for line in table.splitlines():
        m = re.match(r"^(\*?)\s+(\d+)\s+(--mesh .+?)\s{2,}([\d.]+ (?:s|ms|us))"
                     r"\s{2,}(.+?)\s{2,}(.+)$", line)
        if not m:
            continue
        value, unit = m.group(4).split()
        rows.append({"chosen": m.group(1) == "*", "rank": int(m.group(2)),
                     "flags": m.group(3).split(),
                     "seconds": float(value) * SECONDS[unit],
                     "memory": m.group(6)})
    return rows


def reported_total(moec, model, flags, extra):
    out = subprocess.run([moec, model, *flags, *extra, "--memory-report=json"],
                         check=True, capture_output=True, text=True).stdout
    totals = {r["total"] for r in json.loads(out)["ranks"]}
    return max(totals)


def close(shown, exact):
    # The table prints three significant digits.
    return abs(shown - exact) <= 0.006 * exact


def main():
    moec, model, table_path, device_bytes, *extra = sys.argv[1:]
    device_bytes = float(device_bytes)
    rows = parse(open(table_path).read())
    failures = []
    if not rows:
        sys.exit("no layout rows in " + table_path)
    ranks = [r["rank"] for r in rows]
    seconds = [r["seconds"] for r in rows]
    # Rounded times may tie; an elided run keeps the order too.
    if ranks != sorted(ranks) or any(b < a * 0.995 for a, b in
                                     zip(seconds, seconds[1:])):
        failures.append("rows are not ranked by predicted time")
    chosen = [r for r in rows if r["chosen"]]
    if len(chosen) != 1:
        failures.append(f"{len(chosen)} chosen rows")
    else:
        row = chosen[0]
        exact = reported_total(moec, model, row["flags"], extra)
        shown = byte_count(row["memory"].split(",")[0])
        if not close(shown, exact) or exact > device_bytes:
            failures.append(f"chosen {' '.join(row['flags'])}: table "
                            f"{row['memory']}, memory report {exact}")
    checked = {"too large": 0, "bound": 0}
    for row in rows:
        if row["chosen"]:
            break
        memory = row["memory"]
        if memory.endswith("fits"):
            failures.append(f"{' '.join(row['flags'])} fits but ranks "
                            "before the chosen layout")
            continue
        kind = "too large" if memory.endswith("too large") else "bound"
        if checked[kind] >= 3:
            continue
        checked[kind] += 1
        exact = reported_total(moec, model, row["flags"], extra)
        if exact <= device_bytes:
            failures.append(f"{' '.join(row['flags'])} was ruled out "
                            f"({memory}) but needs {exact} bytes")
        if kind == "too large" and not close(byte_count(memory.split(",")[0]),
                                             exact):
            failures.append(f"{' '.join(row['flags'])}: table {memory}, "
                            f"memory report {exact}")
        if kind == "bound" and byte_count(memory[2:].split(" (")[0]) > exact:
            failures.append(f"{' '.join(row['flags'])}: bound {memory} "
                            f"above the memory report {exact}")
    for failure in failures:
        print("FAIL:", failure)
    if failures:
        sys.exit(1)
    print(f"layout table OK: {len(rows)} rows, chosen "
          f"{' '.join(chosen[0]['flags'])}, {checked['too large']} planned "
          f"and {checked['bound']} bounded rows confirmed")


if __name__ == "__main__":
    main()
