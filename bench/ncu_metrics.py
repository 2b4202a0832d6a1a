#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Prints the non-zero metrics of an Nsight Compute CSV report (ncu --csv), one
line per kernel and metric, the warp-stall ratios under short names.

Usage: python3 bench/ncu_metrics.py REPORT.csv
"""
import csv
import sys


def main(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = next((r for r in rows if "Metric Name" in r), None)
    if header is None:
        print(f"{path}: no metrics (is it ncu --csv output?)")
        return 1
    name, value, kernel = (header.index(c) for c in ("Metric Name", "Metric Value", "Kernel Name"))
    for r in rows:
        if r is header or len(r) <= value or not r[name]:
            continue
        try:
            if float(r[value].replace(",", "")) == 0.0:
                continue
        except ValueError:
            pass
        short = (r[name].replace("smsp__average_warps_issue_stalled_", "stall ")
                 .replace("_per_issue_active.ratio", ""))
        print(f"{r[kernel].split('(')[0][-40:]}  {short}  {r[value]}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
