"""Wall time of the quickstart suite: cold (empty cache: fine-tuning, compression, evaluation,
timing) and a cached re-run (target < 5 s), each as a `harness run` subprocess.

    python benchmarks/suite_walltime.py [--suite suites/quickstart.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(suite: str, out: Path, cache: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "run", suite, "--out", str(out), "--no-progress",
                    "--set", f"settings.cache_dir={cache}"], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="suites/quickstart.yaml")
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="suite-wall-"))
    cold = run(args.suite, tmp / "cold", tmp / "cache")
    reused = run(args.suite, tmp / "cold", tmp / "cache")       # same folder: cells reused
    cached = run(args.suite, tmp / "again", tmp / "cache")      # new folder: rows from the cache
    result = {"suite": args.suite, "cold_s": cold, "rerun_same_out_s": reused,
              "rerun_new_out_s": cached}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
