#!/usr/bin/env python3
"""Compare whole commands side by side, interleaved, with perf stat.

Each round runs every command once as a batch of `perf stat -r BATCH`
(microsecond resolution), in turn, so machine noise hits all of them alike.
Prints, per command, the median over rounds of the per-run mean elapsed time,
the median page faults, and the ratio to the first command (the baseline).

usage: scripts/interleave.py [--rounds R] [--batch B] [--cwd DIR] NAME=COMMAND...
COMMAND is split on whitespace (no shell), as perf stat runs it.
"""
import argparse
import os
import statistics
import subprocess
import sys


def measure(argv, batch, cwd):
    out = subprocess.run(
        ["perf", "stat", "-x,", "-r", str(batch), "-e", "task-clock,page-faults", "--"] + argv,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    faults = None
    for line in out.stderr.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2].startswith("page-faults"):
            faults = float(parts[0])
    # perf -x prints no elapsed time; run perf once more in human mode for it.
    human = subprocess.run(
        ["perf", "stat", "-r", str(batch), "-e", "task-clock", "--"] + argv,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = None
    for line in human.stderr.splitlines():
        if "seconds time elapsed" in line:
            elapsed = float(line.split()[0]) * 1000.0
    if elapsed is None:
        sys.exit(f"perf stat gave no elapsed time for {' '.join(argv)}:\n{human.stderr}")
    return elapsed, faults


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--cwd", default=os.getcwd())
    ap.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = ap.parse_args()
    commands = []
    for spec in args.commands:
        name, _, command = spec.partition("=")
        commands.append((name, command.split()))
    times = {name: [] for name, _ in commands}
    faults = {name: [] for name, _ in commands}
    for _ in range(args.rounds):
        for name, argv in commands:
            elapsed, fault = measure(argv, args.batch, args.cwd)
            times[name].append(elapsed)
            if fault is not None:
                faults[name].append(fault)
    base = statistics.median(times[commands[0][0]])
    print(f"{args.rounds} interleaved rounds of perf stat -r {args.batch}; median of the per-round means")
    print("| command | elapsed | page faults | ratio to first |")
    print("|---|---:|---:|---:|")
    for name, _ in commands:
        t = statistics.median(times[name])
        f = statistics.median(faults[name]) if faults[name] else float("nan")
        print(f"| `{name}` | {t:.3f} ms | {f:.0f} | {t / base:.2f}x |")


if __name__ == "__main__":
    main()
