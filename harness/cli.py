"""The ``harness`` command line. Thin: parsing and printing; the work is in the modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from .clitext import COMPARE_HELP, REPORT_HELP
from .errors import HarnessError
from .fsutil import no_space
from .plugins import (
    PluginManager,
    check_disabled,
    disabled_from_env,
    get_plugin_manager,
    import_plugin_module,
)
from .version import __version__

EXIT_FAILED = 1  # a cell failed, or the regression gate found a regression
EXIT_BAD_INPUT = 2  # bad suite, unknown plugin, unreadable results, ...


class _Command(click.Command):
    """The one place where bad input (a ``HarnessError``: bad suite, unknown plugin, unreadable
    results, bad thresholds, ...) becomes a one-line message and exit status 2 (1 for an error
    whose ``exit_status`` says so, and for a full disk), no traceback. Every command gets it,
    also when invoked on its own (tests, other click groups)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            click.secho(f"Error: {exc}", fg="red", err=True)
            ctx.exit(EXIT_FAILED if no_space(exc) else getattr(exc, "exit_status", EXIT_BAD_INPUT))
        except OSError as exc:
            if not no_space(exc):
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            click.secho(f"Error: no space left on the device{where} ({exc.strerror})",
                        fg="red", err=True)
            ctx.exit(EXIT_FAILED)


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
@click.option("--disable-plugin", "disabled", multiple=True, metavar="NAME",
              help="Do not load this plugin (entry-point name); repeatable. "
                   "Also $HARNESS_DISABLE_PLUGINS=a,b.")
@click.option("--plugin", "-p", "extra", multiple=True, metavar="MODULE",
              help="Also load this importable module as a plugin (one-off, local plugins; "
                   "no packaging needed); repeatable. Also $HARNESS_PLUGINS=a,b.")
@click.option("--strict", is_flag=True,
              help="Fail when any installed plugin fails to import (default: warn and go on).")
@click.pass_context
def main(ctx: click.Context, disabled: tuple[str, ...], extra: tuple[str, ...],
         strict: bool) -> None:
    """Benchmark NLP models and their compressed variants: accuracy x size x latency.

    \b
    Examples:
      harness run suites/quickstart.yaml            # run a suite, write results + HTML
      harness plugins                               # what is installed
      harness report runs/quickstart -o reports/qs  # re-render a leaderboard
      harness compare runs/v1 runs/v2               # regression gate (exit 1 on regression)
    """
    _show_harness_warnings_as_one_line()
    ctx.ensure_object(dict)
    ctx.obj["disabled"] = list(disabled)
    ctx.obj["extra"] = [*extra, *(m.strip() for m in os.environ.get("HARNESS_PLUGINS", "").split(",")
                                  if m.strip())]
    ctx.obj["strict"] = strict


def _show_harness_warnings_as_one_line() -> None:
    """``HarnessWarning`` (a problem that costs no result) as 'Warning: ...', no source line."""
    import warnings

    from .errors import HarnessWarning

    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HarnessWarning):
            click.secho(f"Warning: {message}", fg="yellow", err=True)
        else:
            original(message, category, filename, lineno, file, line)

    if not getattr(original, "harness", False):
        show.harness = True  # type: ignore[attr-defined]
        warnings.showwarning = show


def _plugin_manager(ctx: click.Context) -> PluginManager:
    if "pm" not in ctx.obj:
        modules = [import_plugin_module(m) for m in ctx.obj["extra"]]
        check_disabled([*ctx.obj["disabled"], *disabled_from_env()], [m.__name__ for m in modules])
        pm = get_plugin_manager(disabled=ctx.obj["disabled"], strict=ctx.obj["strict"],
                                extra_plugins=modules)
        for err in pm.load_errors:
            click.secho(f"Warning: {err} (skipped; --strict makes this fatal)", fg="yellow", err=True)
        ctx.obj["pm"] = pm
    return ctx.obj["pm"]


@main.command()
@click.argument("suite_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="Results folder [default: runs/<suite name>]. Re-running into the same "
                   "folder resumes: finished cells are kept, not recomputed.")
@click.option("--only", multiple=True, metavar="PATTERN",
              help="Run only cells whose 'model/task/compression' matches this glob; repeatable.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a suite value, e.g. tasks.conll2003.params.data_dir=/data/conll "
                   "or settings.seed=1; repeatable. Strings may use ${VAR:-default}.")
@click.option("--jobs", "-j", type=int, default=None,
              help="Worker processes [default: one per GPU, 1 on CPU]; 0 runs cells in this "
                   "process without isolation.")
@click.option("--devices", default=None, metavar="LIST",
              help="Comma-separated devices, e.g. cuda:0,cuda:1 or cpu [default: all GPUs, else cpu].")
@click.option("--executor", default=None, metavar="NAME",
              help="Where cells run: 'local' worker processes (default), 'inline' (this "
                   "process), or an executor plugin such as 'ray' (see 'harness plugins').")
@click.option("--address", default=None,
              help="Cluster address for executors that use one (e.g. --executor ray --address auto).")
@click.option("--force", is_flag=True, help="Recompute cells found in the cache.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="When another 'harness run' is writing the same --out folder, wait up to "
                   "SECONDS for it to finish [default: 0: exit 2 at once, naming its pid].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-report", is_flag=True, help="Do not render the HTML leaderboard.")
@click.option("--baseline", type=click.Path(exists=True, path_type=Path), default=None,
              help="After the run, gate against these earlier results (see 'harness compare'); "
                   "exit 1 on a regression.")
@click.option("--retime", type=click.IntRange(min=0), default=0, metavar="ROUNDS", is_flag=False,
              flag_value=10, help="With --baseline: re-time the latency checks here and now "
                                  "(see 'harness compare --retime').")
@click.pass_context
def run(ctx, suite_file, out, only, overrides, jobs, devices, executor, address, force, wait_s,
        no_progress, no_report, baseline, retime) -> None:
    """Run every model x task x compression cell of SUITE_FILE.

    Rows are appended to OUT/results.jsonl as each cell finishes (also exported as CSV, JSON
    and Parquet at the end), and OUT/index.html shows the leaderboard. A cell that fails is
    recorded as 'failed' with its error and the run goes on; the exit status is then 1.

    \b
    Example:
      harness run suites/conll2003.yaml --set tasks.conll2003.params.data_dir=../shared/data/conll2003
    """
    from .runner import RunOptions, run_suite
    from .suite import load_suite

    suite = load_suite(suite_file, overrides)
    if baseline is not None:
        from .gate import gate_thresholds

        gate_thresholds(suite.gate, path=suite.path)  # a bad gate: fail before a long run
    pm = _plugin_manager(ctx)
    from .fsutil import safe_name  # a suite name, not a path: runs/<name> stays in runs/

    out = out or Path("runs") / safe_name(suite.name)
    opts = RunOptions(
        jobs=jobs, devices=devices.split(",") if devices else None, force=force,
        only=list(only), show_progress=not no_progress, disabled_plugins=ctx.obj["disabled"],
        extra_plugins=ctx.obj["extra"], executor=executor, address=address, wait_s=wait_s,
    )
    summary = run_suite(suite, pm, out, opts)
    parts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items()))
    click.echo(f"{parts or 'nothing to do'}; results in {out / 'results.jsonl'}")
    status = summary.exit_status  # 2 when every failure is bad input (a data file, ...)
    if not no_report:
        page = _render(out)
        if page:
            click.echo(f"leaderboard: {page}")
    if baseline is not None:
        from .gate import run_gate
        from .results import load_results

        gate = run_gate(baseline, load_results(out), suite.gate, out_dir=out,
                        retime=_retime(ctx, retime, suite.settings.cache_dir))
        if EXIT_FAILED in (status, gate):  # a crash or a regression outranks bad input
            status = EXIT_FAILED
        else:
            status = max(status, gate)
    ctx.exit(status)


def _render(out: Path) -> Path | None:
    """Render the leaderboard; a rendering problem never costs the measured results."""
    from .results import load_results

    try:
        from .report import render_report

        return render_report(load_results(out), out, write_rows=False)  # the run exported them
    except Exception as exc:  # noqa: BLE001
        click.secho(f"Warning: could not render the leaderboard: {type(exc).__name__}: {exc}; "
                    f"results are intact in {out}", fg="yellow", err=True)
        return None


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--params", "params_of", metavar="NAME", default=None,
              help="List the parameters plugin NAME accepts in a suite entry's 'params': name, "
                   "type, default and meaning.")
@click.pass_context
def plugins(ctx, as_json: bool, params_of: str | None) -> None:
    """List installed models, tasks and compressions with their plugin and distribution.

    \b
    Example:
      harness plugins
      harness plugins --params low-rank
      harness --disable-plugin nncf plugins
    """
    import json

    from .plugins import plugin_table
    from .textfmt import table

    pm = _plugin_manager(ctx)
    if params_of is not None:
        from .plugins import params_listing

        click.echo(params_listing(pm, params_of, as_json=as_json), nl=False)
        return
    rows = plugin_table(pm)
    if as_json:
        click.echo(json.dumps({"plugins": rows, "load_errors": [str(e) for e in pm.load_errors]}, indent=1))
        return
    cols = ("name", "kind", "chain", "models", "version", "plugin", "distribution")
    click.echo(table([c.upper() for c in cols], [[r[c] for c in cols] for r in rows]), nl=False)
    if pm.load_errors:
        sys.exit(EXIT_FAILED)


@main.command("report", help=REPORT_HELP)
@click.argument("results", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for index.html and the data files (default: reports/<name of RESULTS>).")
@click.option("--baseline", type=click.Path(path_type=Path), default=None,
              help="Earlier results (folder or file): show coloured deltas against them.")
@click.option("--title", default=None, help="Page title (default: 'Leaderboard: <suite>').")
@click.option("--max-drop", type=float, default=0.01, show_default=True, help="Accuracy bound of "
              "each task's per-model summary, as in 'harness select --max-drop'.")
def report_command(results: Path, out_dir: Path | None, baseline: Path | None,
                   title: str | None, max_drop: float) -> None:
    from .report import load_results_for_report, render_report

    df = load_results_for_report(results, "results")
    bdf = load_results_for_report(baseline, "baseline") if baseline is not None else None
    if out_dir is None:
        stem = results.name if results.is_dir() else results.parent.name or results.stem
        out_dir = Path("reports") / (stem or "report")
    page = render_report(df, out_dir, baseline=bdf, title=title, max_drop=max_drop)
    click.echo(f"leaderboard: {page}")


def _stack(*options: Any) -> Any:
    """Several click options as one decorator."""
    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


_RETIME_OPTIONS = _stack(
    click.option("--retime", type=click.IntRange(min=0), default=0, metavar="ROUNDS",
                 is_flag=False, flag_value=10,
                 help="Re-time the latency checks here and now instead of reading the recorded "
                      "figures: both runs' artifacts, rebuilt from the cache, timed in ROUNDS "
                      "alternating rounds [--retime alone: 10]; a slowdown fails only when its "
                      "95% CI lies above latency_increase."),
    click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                 help="Where --retime finds the artifacts [default: the suite's cache_dir, "
                      "else .harness-cache]."))


@main.command("compare", help=COMPARE_HELP)
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option("-t", "--threshold", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Gate setting, e.g. latency_increase=0.2 or metrics.entity_f1.max_drop=0.005 "
                   "(repeatable; wins over --suite).")
@click.option("--suite", "suite_path", type=click.Path(path_type=Path),
              help="Suite file whose gate: section gives the thresholds.")
@click.option("--markdown", type=click.Path(path_type=Path), help="Write a Markdown report here.")
@click.option("--junit", type=click.Path(path_type=Path), help="Write JUnit XML here.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write JSON here.")
@click.option("--noise-band", type=click.Choice(["fixed", "auto", "runs"]), default=None,
              help="Latency noise band: 'fixed' (latency_noise, 5%), 'auto' (per cell, from the spread "
                   "of the recorded samples inside each run) or 'runs' (per cell, from how much it "
                   "moved between the --noise-runs). Same as -t noise_band=VALUE.")
@click.option("--noise-runs", multiple=True, type=click.Path(path_type=Path), metavar="RUN",
              help="A repeated run of the baseline (same suite, same machine); repeat it, at "
                   "least 3 runs. Implies --noise-band runs unless another band is given.")
@click.option("--significance", "paired_alpha", type=float, default=None, help="Alpha of the paired "
              "accuracy tests on per-example outputs (default 0.05). Same as -t paired_alpha=VALUE.")
@click.option("--gate-on", type=click.Choice(["both", "significance"]), default=None,
              help="With per-example outputs, an accuracy drop fails when beyond the threshold "
                   "and significant ('both', default) or when significant ('significance').")
@_RETIME_OPTIONS
@click.pass_context
def compare_command(ctx: click.Context, baseline: Path, current: Path, overrides: tuple[str, ...],
                    suite_path: Path | None, markdown: Path | None, junit: Path | None,
                    json_path: Path | None, noise_band: str | None, noise_runs: tuple[Path, ...],
                    paired_alpha: float | None, gate_on: str | None, retime: int,
                    cache_dir: Path | None) -> None:
    from .gate import gate_thresholds, run_gate, set_dotted, suite_gate
    for module in (ctx.obj or {}).get("extra", ()):  # -p modules declare their scorers
        import_plugin_module(module)

    gate: dict[str, Any] = suite_gate(suite_path) if suite_path else {}
    th = gate_thresholds(gate, path=suite_path)
    flags = {"noise_band": noise_band or ("runs" if noise_runs else None),
             "paired_alpha": paired_alpha, "accuracy_gate_on": gate_on}  # -t overrides win
    overrides = (*(f"{k}={v}" for k, v in flags.items() if v is not None), *overrides)
    if overrides:
        for text in overrides:
            set_dotted(gate, text)
        th = gate_thresholds(gate)
    from .suite import load_suite

    settings_dir = load_suite(suite_path).settings.cache_dir if suite_path and retime else None
    sys.exit(run_gate(baseline, current, th, markdown=markdown, junit=junit, json_path=json_path,
                      out=sys.stdout, noise_runs=noise_runs,
                      retime=_retime(ctx, retime, cache_dir or settings_dir)))


def _retime(ctx: click.Context, rounds: int, cache_dir: Any) -> Any:
    from .gate import RetimeOptions  # None when not re-timing
    obj = ctx.obj or {}  # a command invoked on its own has no group options
    return RetimeOptions.given(rounds, cache_dir, obj.get("disabled", []), obj.get("extra", []),
                               lambda text: click.echo(text, err=True))


@main.command("select")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--max-drop", type=float,
              help="Largest allowed absolute drop of the headline metric vs the baseline (required without --grid).")
@click.option("--by", default="latency_b1_p50_ms", show_default=True,
              help="Measurement to optimise (per the rows' higher_is_better; latency and throughput "
                   "rotation-timed where a whole (model, task) is; BY names the metric used).")
@click.option("--baseline", "baseline_compression", default="none", show_default=True,
              help="Compression label of the uncompressed variant of each model.")
@click.option("--grid", is_flag=True, help="Of each grid (names entry@point) the best on validation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table.")
def select_command(results: Path, max_drop: float | None, by: str, baseline_compression: str,
                   grid: bool, as_json: bool) -> None:
    """Per model and task, the best variant of RESULTS within an accuracy bound (--max-drop);
    with --grid, of each parameter grid the best variant on the validation split.

    \b
    Example:
      harness select runs/nightly --max-drop 0.01 --by latency_b1_p50_ms
      harness select runs/nightly --max-drop 0.005 --by size_bytes --json
      harness select runs/teachers --grid
    """
    from .analysis import grids, select
    from .analysis.cells import read_table

    table = read_table(results, "results")
    if grid:
        return click.echo((grids.to_json if as_json else grids.to_table)(grids.choose(table, str(results))), nl=False)
    if max_drop is None:
        raise click.UsageError("--max-drop is required (or --grid)")
    sel = select.select(table, max_drop, by, baseline=baseline_compression, name=str(results))
    click.echo(select.to_json(sel, max_drop, by) if as_json else select.to_table(sel), nl=False)


@main.command("history")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder for history.html.")
@click.option("--title", default=None, help="Page title.")
def history_command(runs: tuple[Path, ...], out_dir: Path, title: str | None) -> None:
    """Render one self-contained HTML page of each cell across RUNS (oldest first).

    Headline metric (with CI), size, batch-1 p50 and throughput per run, labelled from the
    runs' provenance; changes the regression gate would flag between consecutive runs are
    marked.

    \b
    Example:
      harness history runs/v1.0 runs/v1.1 runs/nightly -o reports/history
    """
    from .analysis.history import render_history

    click.echo(f"history: {render_history(list(runs), out_dir, title=title)}")
