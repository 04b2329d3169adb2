"""Lifecycle-hook observer: records what it sees (a logger or uploader would look like this)."""

from __future__ import annotations

import harness

EVENTS: list[tuple[str, object]] = []


@harness.hookimpl
def run_started(suite, out_dir, cells):
    EVENTS.append(("run_started", (suite.name, len(cells))))


@harness.hookimpl
def result_recorded(row):
    EVENTS.append(("result_recorded", (row["model"], row["status"], row["metric"])))


@harness.hookimpl
def run_finished(results, out_dir):
    EVENTS.append(("run_finished", len(results)))
