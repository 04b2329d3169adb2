"""Charts that scale with models (issue 30, part 2): with several models the colour is the model
and the marker shape the runtime, each model's own front is a thin line in its colour, a crowded
chart labels only its front points (the others keep a hover title), and a click on a model's
legend entry hides/shows its markers. A single-model report keeps colour = compression.

The frame: 6 models (one named ``<script>…``) x 8 compressions x 2 tasks, three runtimes."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from browser_kit import needs_browser
from browser_kit import open_page as _open
from report_fixtures import COMPRESSIONS, TASKS, XSS, make_results, ok_cells
from test_report_labels import _box, _overlaps

from harness.analysis.pareto import pareto_front
from harness.report import build_view, render_report

MODELS = ["enc-a", "enc-b", "enc-c", "enc-d", "enc-e", XSS]
browser = [pytest.mark.slow, needs_browser]


def six_by_eight(models: list[str] = MODELS) -> pd.DataFrame:
    """``make_results`` (4 compressions, torch/openvino) plus a fine-tuned copy of each
    compression ("-ft": smaller, faster, a little less accurate), whose ``dynamic-int8-ft`` runs
    on onnxruntime: 8 compressions, 3 runtimes."""
    first = make_results(models=models)
    cells = [(m, t, c) for m in models for t in TASKS for c in COMPRESSIONS]
    ft = make_results(models=models, seed=1,
                      accuracy_delta={k: -0.004 - 0.003 * i for i, k in enumerate(cells)},
                      size_factor={k: 0.62 + 0.01 * (i % 7) for i, k in enumerate(cells)},
                      latency_factor={k: 0.7 + 0.02 * (i % 5) for i, k in enumerate(cells)})
    ft["compression"] = ft["compression"] + "-ft"
    ft["cell_id"] = ft["cell_id"] + "f"
    ft.loc[ft["compression"] == "dynamic-int8-ft", "runtime"] = "onnxruntime"
    return pd.concat([first, ft], ignore_index=True)


class _Svg(HTMLParser):
    """Per chart (svg id): its marker circles, shape paths, model-front paths and labels, each
    as its attributes (plus ``title`` for a circle's <title> text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.svg: str | None = None
        self.charts: dict[str, dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
        self._circle: dict[str, str] | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        cls = a.get("class", "").split()
        if tag == "svg" and "chart" in cls:
            self.svg = a["id"]
        elif self.svg and tag == "circle" and "point" in cls:
            self._circle = a
            self.charts[self.svg]["points"].append(a)
        elif self.svg and tag == "path" and "shape" in cls:
            self.charts[self.svg]["shapes"].append(a)
        elif self.svg and tag == "path" and "model-front" in cls:
            self.charts[self.svg]["fronts"].append(a)
        elif self.svg and tag == "text" and "label" in cls:
            self.charts[self.svg]["labels"].append(a)
        elif tag == "title" and self._circle is not None:
            self._in_title = True

    def handle_data(self, data):
        if self._in_title and self._circle is not None:
            self._circle["title"] = self._circle.get("title", "") + data

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None
        elif tag == "title":
            self._in_title = False
        elif tag == "circle":
            self._circle = None


def _parse(html: str) -> dict[str, dict[str, list[dict[str, str]]]]:
    p = _Svg()
    p.feed(html)
    return p.charts


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return six_by_eight()


@pytest.fixture(scope="module")
def page(frame, tmp_path_factory) -> tuple[Path, str]:
    path = render_report(frame, tmp_path_factory.mktemp("models-report"))
    return path, path.read_text(encoding="utf-8")


def test_the_frame_is_six_models_by_eight_compressions(frame):
    assert frame["model"].nunique() == 6 and frame["compression"].nunique() == 8
    assert set(frame["runtime"].dropna()) == {"torch", "openvino", "onnxruntime"}
    assert len(ok_cells(frame, "conll2003")) > 40


def test_markers_are_coloured_by_model(page, frame):
    charts = _parse(page[1])
    assert len(charts) == 4
    for cid, ch in charts.items():
        task = "conll2003" if cid.startswith("chart-t0") else "sst2"
        assert len(ch["points"]) == len(ok_cells(frame, task))
        fills = defaultdict(set)
        for p in ch["points"]:
            fills[p["data-model"]].add(p["fill"])
        assert set(fills) == set(MODELS)
        assert all(len(f) == 1 for f in fills.values())  # one colour per model ...
        assert len({next(iter(f)) for f in fills.values()}) == 6  # ... six distinct ones
        assert {p["data-compression"] for p in ch["points"]} == {
            c + s for c in COMPRESSIONS for s in ("", "-ft")}


def test_marker_shape_is_the_runtime(page):
    for ch in _parse(page[1]).values():
        by_runtime = defaultdict(set)
        shaped = {(s["data-row"]) : s for s in ch["shapes"]}
        for p in ch["points"]:
            is_shaped = "shaped" in p["class"].split()
            assert is_shaped is (p["data-row"] in shaped)
            shape = re.search(r"shape-(\S+)", shaped[p["data-row"]]["class"]).group(1) \
                if is_shaped else "circle"
            if is_shaped:  # the visible shape has the marker's colour
                assert shaped[p["data-row"]]["fill"] == p["fill"]
            by_runtime[p["data-runtime"]].add(shape)
        assert set(by_runtime) == {"torch", "openvino", "onnxruntime"}
        assert all(len(s) == 1 for s in by_runtime.values())
        assert len({next(iter(s)) for s in by_runtime.values()}) == 3
        assert by_runtime["torch"] == {"circle"}  # the most common runtime keeps the circle


def test_each_model_has_its_own_front_line(page, frame):
    view = build_view(frame)
    charts = _parse(page[1])
    for t in view["tasks"]:
        for ch in t["charts"]:
            fronts = charts[ch["id"]]["fronts"]
            assert {f["data-model"] for f in fronts} == set(MODELS)
            colour = {p["model"]: p["colour"] for p in ch["points"]}
            for f in fronts:
                assert f["stroke"] == colour[f["data-model"]]
            for mf in ch["model_fronts"]:  # the line runs through the model's own front
                mine = [p for p in ch["points"] if p["model"] == mf["model"]]
                front = pareto_front([(p["x"], p["y"]) for p in mine], maximize_y=True)
                assert mf["n"] == len(front) >= 2
                for i in front:
                    assert f"{mine[i]['cx']},{mine[i]['cy']}" in mf["d"] or \
                        f"H{mine[i]['cx']}V{mine[i]['cy']}" in mf["d"]


def test_crowded_charts_label_only_the_front(page, frame):
    view = build_view(frame)
    charts = _parse(page[1])
    for t in view["tasks"]:
        for ch in t["charts"]:
            svg = charts[ch["id"]]
            front_rows = {str(p["row"]) for p in ch["points"] if p["front"]}
            assert len(svg["points"]) > 20
            assert {lab["data-row"] for lab in svg["labels"]} == front_rows
            assert len(svg["labels"]) < len(svg["points"])
            for p in svg["points"]:  # every marker is named by its hover title
                assert " / " in p["title"] and p["data-compression"] in p["title"]
            labelled = [p for p in ch["points"] if p["labelled"]]
            boxes = [_box(p) for p in labelled]
            assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if _overlaps(a, b)]
    assert "Only the front points are labelled" in page[1]


def test_single_model_keeps_colour_by_compression(tmp_path):
    df = make_results(models=["minilm-l6"])
    html = render_report(df, tmp_path).read_text(encoding="utf-8")
    for ch in _parse(html).values():
        fills = defaultdict(set)
        for p in ch["points"]:
            fills[p["data-compression"]].add(p["fill"])
        assert len(fills) >= 3 and all(len(f) == 1 for f in fills.values())
        assert len({next(iter(f)) for f in fills.values()}) == len(fills)
        assert ch["shapes"] == [] and ch["fronts"] == []
        assert len(ch["labels"]) == len(ch["points"])  # few points: all labelled
    assert "Colour = compression" in html and "legend-model" not in html
    comps = re.findall(r'<button type="button" class="legend-item legend-toggle legend-compression" '
                       r'data-axis="compression" data-value="([^"]*)"', html)
    assert sorted(comps) == sorted(COMPRESSIONS * 2)  # one clickable entry per compression, per task


def test_legend_names_models_and_says_when_colours_repeat(page):
    html = page[1]
    buttons = re.findall(r'<button type="button" class="legend-item legend-toggle legend-model" '
                         r'data-axis="model" data-value="[^"]*" data-model="([^"]*)"', html)
    assert len(buttons) == 2 * 6 and "&lt;script&gt;alert(1)&lt;/script&gt;" in buttons
    assert "Shape = runtime" in html and "colours repeat" not in html
    view = build_view(six_by_eight([f"m{i:02d}" for i in range(13)]))
    lg = view["tasks"][0]["legend"]
    assert lg["repeats"] and len(lg["entries"]) == 13
    assert lg["entries"][12]["colour"] == lg["entries"][0]["colour"]
    assert len({e["colour"] for e in lg["entries"][:12]}) == 12
    assert lg["groups"] == [{"name": "hf", "entries": lg["entries"]}]  # one plugin: one group
    assert build_view(six_by_eight())["tasks"][0]["legend"]["groups"] == []  # 6 models: no groups


def test_beyond_twelve_models_the_legend_groups_them_by_plugin(tmp_path):
    frame = six_by_eight([f"m{i:02d}" for i in range(14)])
    frame.loc[frame["model"].isin(["m03", "m07", "m11"]), "model_plugin"] = "crf"
    lg = build_view(frame)["tasks"][0]["legend"]
    assert [(g["name"], [e["name"] for e in g["entries"]]) for g in lg["groups"]] == [
        ("crf", ["m03", "m07", "m11"]),
        ("hf", [f"m{i:02d}" for i in range(14) if i not in (3, 7, 11)])]
    html = render_report(frame, tmp_path).read_text(encoding="utf-8")
    legend = html[html.index('id="task-0-legend"'):]
    legend = legend[:legend.index("</p>")]
    assert legend.count('class="legend-group-name">crf:</span>') == 1
    crf = legend[legend.index(">crf:<"):legend.index(">hf:<")]
    assert re.findall(r'data-model="([^"]*)"', crf) == ["m03", "m07", "m11"]
    assert "grouped by plugin" in legend


# -- in a real headless Chromium -------------------------------------------------------------

VISIBLE_LABEL_RECTS = """
const out = {};
for (const svg of document.querySelectorAll('svg.chart')) {
  out[svg.id] = [...svg.querySelectorAll('text.label')]
    .filter(t => getComputedStyle(t).display !== 'none')
    .map(t => { const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; });
}
return out;"""


def _overlapping(rects: list[list[float]]) -> list[tuple[int, int]]:
    eps = 0.5  # sub-pixel font metrics
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(rects), 2)
            if a[0] + eps < b[2] and a[2] > b[0] + eps and a[1] + eps < b[3] and a[3] > b[1] + eps]


def _shown(driver, selector: str, model: str) -> list[bool]:
    return driver.execute_script(
        """return [...document.querySelectorAll(arguments[0])]
             .filter(e => e.getAttribute('data-model') === arguments[1])
             .map(e => getComputedStyle(e).display !== 'none');""", selector, model)


@pytest.fixture(scope="module")
def page_url(page) -> str:
    return page[0].resolve().as_uri()


@pytest.mark.slow
@needs_browser
def test_page_is_inert_and_without_console_errors(driver, page_url):
    from selenium.common.exceptions import NoAlertPresentException

    _open(driver, page_url)
    assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - an injected alert(1) would be open here
    assert driver.execute_script("return document.querySelectorAll('script').length") == 2
    names = driver.execute_script(
        "return [...document.querySelectorAll('#task-0-legend button.legend-model')]"
        ".map(b => b.getAttribute('data-model'))")
    assert XSS in names and len(names) == 6


@pytest.mark.slow
@needs_browser
def test_legend_click_hides_and_shows_a_model(driver, page_url):
    from selenium.webdriver.common.by import By

    _open(driver, page_url)
    for model in ("enc-b", XSS):
        button = next(b for b in driver.find_elements(
            By.CSS_SELECTOR, "#task-0-legend button.legend-model")
            if b.get_attribute("data-model") == model)
        sel = "#task-0 svg.chart circle.point"
        before = _shown(driver, sel, model)
        assert before and all(before)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()
        assert button.get_attribute("aria-pressed") == "false"
        assert not any(_shown(driver, sel, model))
        assert not any(_shown(driver, "#task-0 svg.chart path.model-front", model))
        assert not any(_shown(driver, "#task-0 svg.chart path.shape", model))
        assert all(_shown(driver, sel, "enc-a"))  # the others stay
        assert all(_shown(driver, "#task-1 svg.chart circle.point", model))  # other task too
        rects = driver.execute_script(VISIBLE_LABEL_RECTS)
        assert all(_overlapping(r) == [] for r in rects.values())
        button.click()
        assert button.get_attribute("aria-pressed") == "true"
        assert all(_shown(driver, sel, model))
    assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []


@pytest.mark.slow
@needs_browser
def test_no_two_visible_labels_overlap(driver, page_url):
    _open(driver, page_url)
    rects = driver.execute_script(VISIBLE_LABEL_RECTS)
    assert len(rects) == 4 and all(rects.values())
    assert {cid: _overlapping(r) for cid, r in rects.items()} == {cid: [] for cid in rects}


def _shown_by(driver, section: str, axis: str) -> dict[str, set[bool]]:
    """Per value of ``data-<axis>``: the display states of the section's chart markers."""
    out = driver.execute_script(
        """const out = {};
           for (const c of document.querySelectorAll('#' + arguments[0] + ' svg.chart circle.point')) {
             const v = c.getAttribute('data-' + arguments[1]);
             (out[v] = out[v] || []).push(getComputedStyle(c).display !== 'none');
           }
           return out;""", section, axis)
    return {k: set(v) for k, v in out.items()}


def _legend_button(driver, axis: str, value: str, section: str = "task-0"):
    from selenium.webdriver.common.by import By

    b = next(b for b in driver.find_elements(By.CSS_SELECTOR, f"#{section}-legend button.legend-toggle")
             if b.get_attribute("data-axis") == axis and b.get_attribute("data-value") == value)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", b)
    return b


@pytest.mark.slow
@needs_browser
def test_legend_clicks_on_a_compression_and_a_runtime_hide_their_markers(driver, page_url):
    _open(driver, page_url)
    comp = _legend_button(driver, "compression", "dynamic-int8-ft")
    comp.click()
    assert comp.get_attribute("aria-pressed") == "false"
    shown = _shown_by(driver, "task-0", "compression")
    assert shown.pop("dynamic-int8-ft") == {False} and all(v == {True} for v in shown.values())
    assert _shown_by(driver, "task-1", "compression")["dynamic-int8-ft"] == {True}  # other task
    comp.click()
    runtime = _legend_button(driver, "runtime", "openvino")
    runtime.click()
    shown = _shown_by(driver, "task-0", "runtime")
    assert shown.pop("openvino") == {False} and all(v == {True} for v in shown.values())
    rects = driver.execute_script(VISIBLE_LABEL_RECTS)
    assert all(_overlapping(r) == [] for r in rects.values())
    runtime.click()
    assert _shown_by(driver, "task-0", "runtime") == {r: {True} for r in
                                                      ("torch", "openvino", "onnxruntime")}
    assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []


@pytest.mark.slow
@needs_browser
def test_shift_click_and_shift_enter_isolate_an_entry(driver, page_url):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _open(driver, page_url)
    comp = _legend_button(driver, "compression", "none")
    ActionChains(driver).key_down(Keys.SHIFT).click(comp).key_up(Keys.SHIFT).perform()
    shown = _shown_by(driver, "task-0", "compression")
    assert shown.pop("none") == {True} and all(v == {False} for v in shown.values())
    ActionChains(driver).key_down(Keys.SHIFT).click(comp).key_up(Keys.SHIFT).perform()
    assert all(v == {True} for v in _shown_by(driver, "task-0", "compression").values())
    model = _legend_button(driver, "model", XSS)  # the keyboard: focus, then Shift+Enter
    driver.execute_script("arguments[0].focus()", model)
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    shown = _shown_by(driver, "task-0", "model")
    assert shown.pop(XSS) == {True} and all(v == {False} for v in shown.values())
    ActionChains(driver).send_keys(Keys.ENTER).perform()  # plain Enter: toggles it off
    assert model.get_attribute("aria-pressed") == "false"
    assert all(v == {False} for v in _shown_by(driver, "task-0", "model").values())
    assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
