"""Fault drill: a tiny 8-cell suite run with 2 workers (--workers) while faults are injected on purpose.

    .venv/bin/python benchmarks/fault_drill.py            # 14 faults, about 6 minutes on 2 CPU cores
    .venv/bin/python benchmarks/fault_drill.py --only disk --keep   # one fault, folder kept

Each fault takes 10 to 50 s (one or two small runs; more when the CPUs are busy).

Each fault gets a fresh work folder (results folder and, unless said otherwise, a fresh cache)
and one line of output: what was lost (cells whose measured rows are gone, or doubled), the
exit status of the run (several runs: "1, then 0"; and the one expected), how many processes
of the run were still alive 5 s after it ended (orphans), the seconds it took and a summary
(which names any other expectation that was not met). The cells are 1 tiny BERT x 2 NER tasks
(the CoNLL-2003 sample shipped in suites/data) x 4 compressions; the misbehaving compressions
come from tests/plugins/faulty.py, the full disk and the kill while rows are recorded from
tests/plugins/sabotage.py. A fault that cannot be staged here (the full disk needs root to
mount a small tmpfs) prints SKIP and a note.

Exit status of the drill: 0 when nothing was lost, every exit status was the expected one, every
other expectation was met and no process was left behind (skipped faults do not count); 1
otherwise; 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import fault_drill_kit as kit
from fault_drill_faults import FAULTS
from fault_drill_kit import Result, Skipped


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fault_drill.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="the --jobs of every 'harness run' the drill starts (default: 2)")
    p.add_argument("--keep", action="store_true",
                   help="keep each fault's temporary work folder and print where it is "
                        "(default: delete it)")
    p.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                   help="run only the faults whose name contains SUBSTRING; repeatable")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    names = [name for name, _ in FAULTS]
    if args.only and not any(s in n for s in args.only for n in names):
        p.error(f"--only {' '.join(args.only)} matches no fault; the faults are:\n  "
                + "\n  ".join(names))
    return args


def run_fault(fault, keep: bool) -> tuple[Result | str, Path]:
    """The fault's result (or why it was skipped) and its work folder (deleted unless kept)."""
    work = Path(tempfile.mkdtemp(prefix="harness-drill-"))
    try:
        return fault(work), work
    except Skipped as why:
        return str(why), work
    except Exception as exc:  # noqa: BLE001 - a drill that breaks is a failed line, not the end
        return Result([], "?", "-", 0, "the drill itself failed",
                      [f"{type(exc).__name__}: {exc}"]), work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def line(name: str, width: int, result: Result | str, seconds: float) -> str:
    if isinstance(result, str):
        return f"SKIP {name:{width}s} | {seconds:4.0f} s | {result}"
    gone = result.lost
    note = result.note + "".join(f"; NOT MET: {p}" for p in result.problems)
    return (f"{'PASS' if result.good else 'FAIL'} {name:{width}s} lost: {len(gone)}"
            f"{' ' + json.dumps(gone) if gone else ''} | exit {result.status} (expected "
            f"{_alternatives(result.allowed())}) | orphans: {result.orphans} | {seconds:4.0f} s | "
            f"{note}")


def _alternatives(allowed: list[str]) -> str:
    return (", or " if any(" " in a for a in allowed) else " or ").join(allowed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kit.JOBS, kit.KEEP = args.workers, args.keep
    faults = [(n, f) for n, f in FAULTS if not args.only or any(s in n for s in args.only)]
    if os.geteuid() == 0 and any("unwritable" in n for n, _ in faults):
        print("note: running as root, so chmod a-w does not stop writes; the unwritable cell "
              "cache fault uses a file in place of the folder, which stops everyone")
    width = max(40, *(len(n) for n, _ in faults))
    ok = True
    for name, fault in faults:
        t0 = time.monotonic()
        result, work = run_fault(fault, args.keep)
        ok &= isinstance(result, str) or result.good
        print(line(name, width, result, time.monotonic() - t0), flush=True)
        if args.keep:
            print(f"     work folder kept: {work}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
