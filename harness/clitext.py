"""Long help texts of the ``harness`` command line (:mod:`harness.cli`)."""

REPORT_HELP = """Render the HTML leaderboard of a run (one self-contained file, no network).

\b
RESULTS is a run folder or a results file (.jsonl, .csv, .json, .parquet).
Writes DIR/index.html plus the same data as results.csv / results.json and
leaderboard.csv / leaderboard.json. Open index.html from disk in any browser.

\b
Example:
  harness report runs/nightly -o reports/nightly/
  harness report runs/nightly -o reports/nightly/ --baseline runs/release-1.2 \\
      --title "Nightly vs 1.2"
"""

COMPARE_HELP = """Gate CURRENT results against BASELINE results (folders or files).

\b
Cells are matched by (model, task, compression, metric). A regression is:
  - a quality metric (each task's main metric by default) dropping more than
    accuracy_drop (absolute, default 0.01) or accuracy_drop_relative;
  - latency (latency_b1_p50_ms by default) worse by more than latency_increase
    (default 10%) AND the noise band latency_noise (5%; --noise-band auto derives
    it per cell from the recorded samples) AND significant
    (one-sided Mann-Whitney U over the recorded iterations, p < significance 0.01);
  - size_bytes growing by more than size_increase (default 0: any growth);
  - a cell missing from CURRENT, newly skipped, or newly failed.
With --retime, latency is re-measured here instead: both runs' artifacts,
rebuilt from the cache, timed in alternation, each in its own process; a
slowdown fails only when its 95% CI lies wholly above latency_increase.

\b
Thresholds come from the suite's gate: section (--suite) and -t KEY=VALUE
(which wins). Exit status: 0 pass, 1 regression, 2 bad input.

\b
Example:
  harness compare runs/release-1.2 runs/nightly --suite suites/nightly.yaml \\
      -t accuracy_drop=0.005 -t metrics.entity_f1.max_drop=0.003 \\
      --markdown "$GITHUB_STEP_SUMMARY" --junit gate.xml --json gate.json
"""
