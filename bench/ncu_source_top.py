#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Prints the SASS lines of one kernel that hold the most warp-stall samples
and the most executed instructions, from Nsight Compute's source page
(ncu --page source --csv --print-source sass), with each line's share of
the kernel's samples and the stall reasons that dominate it.

Usage: python3 bench/ncu_source_top.py REPORT.csv [LINES]
"""
import csv
import sys


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main(path, count):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = next((r for r in rows if "Source" in r and
                   "Warp Stall Sampling (All Samples)" in r), None)
    if header is None:
        print(f"{path}: no source page with stall samples (is it ncu --page source --csv?)")
        return 1
    source = header.index("Source")
    samples = header.index("Warp Stall Sampling (All Samples)")
    executed = header.index("Instructions Executed") if "Instructions Executed" in header else None
    # Each reason's samples; its "(Not Issued)" twin counts a subset of them.
    reasons = [i for i, c in enumerate(header) if c.startswith("stall_") and "(Not Issued)" not in c]
    body = [r for r in rows[rows.index(header) + 1:] if len(r) == len(header)]
    total = sum(number(r[samples]) for r in body) or 1.0
    total_exec = sum(number(r[executed]) for r in body) if executed is not None else 0.0
    print(f"{len(body)} SASS lines, {total:.0f} stall samples, {total_exec:.3g} instructions")
    for r in sorted(body, key=lambda r: -number(r[samples]))[:count]:
        top = sorted(((number(r[i]), header[i]) for i in reasons), reverse=True)[:2]
        why = ", ".join(f"{name} {value:.0f}" for value, name in top if value > 0)
        share = 100.0 * number(r[samples]) / total
        ex = f" exec {number(r[executed]):.3g}" if executed is not None else ""
        print(f"{share:5.1f}%{ex}  {r[source].strip()[:70]}  [{why}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30))
