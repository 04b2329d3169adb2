"""Chart labels stay readable with ~15 points per chart: no two labels overlap; a crowded point
gets a number and the chart's key names it."""

from __future__ import annotations

import itertools

from harness.report.charts import CHAR_W, LABEL_H, chart

NAMES = ["none", "dynamic-int8", "openvino-fp32", "nncf-int8", "ort-int8", "nncf-w4",
         "palette-4bit-emb", "distill-4", "distill-3", "distill-3-noteacher", "distill-2",
         "prune-50-ft", "prune-50-ft-int8", "lowrank-ffn25-emb128-ft", "share-2-ft",
         "distill-3-int8", "distill-3-emb128-int8"]


def _box(p):
    w = len(p["label"]) * CHAR_W
    x0 = p["lx"] - w if p["anchor"] == "end" else p["lx"]
    return (x0, p["ly"] - LABEL_H + 3, x0 + w, p["ly"] + 3)


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def _points(xy):
    return [{"x": x, "y": y, "label": n, "key": n, "row": i, "colour": "#000", "tip": n}
            for i, (n, (x, y)) in enumerate(zip(NAMES, xy))]


def test_crowded_points_get_numbers_and_a_key_without_overlaps():
    # a realistic crowd: most variants within 1 F1 point and 20-90 MB, a few far away
    xy = [(90.3, 0.800), (23.4, 0.799), (90.0, 0.800), (23.1, 0.7995), (23.0, 0.7935),
          (30.0, 0.797), (22.0, 0.799), (62.0, 0.792), (47.0, 0.785), (47.0, 0.770),
          (33.0, 0.745), (50.0, 0.796), (23.2, 0.795), (52.0, 0.780), (60.0, 0.788),
          (12.0, 0.784), (9.4, 0.781)]
    ch = chart("c", "t", "size", "F1", _points(xy), [], True, x_zero=False)
    boxes = [_box(p) for p in ch["points"]]
    assert not [(a, b) for a, b in itertools.combinations(range(len(boxes)), 2)
                if _overlaps(boxes[a], boxes[b])]
    keyed = [p for p in ch["points"] if p.get("keyed")]
    assert keyed and len(ch["key"]) == len(keyed)  # the crowd needed numbers
    names = dict(ch["key"])
    for p in keyed:
        assert p["label"].isdigit() and names[p["label"]] == p["tip"]
    named = {p["label"] for p in ch["points"] if not p.get("keyed")}
    assert named | set(names.values()) == set(NAMES)  # every cell is named once


def test_spread_points_keep_their_names():
    xy = [(10.0 * 1.5**i, 0.5 + 0.02 * i) for i in range(6)]
    ch = chart("c", "t", "size", "F1", _points(xy), [], True, x_zero=False)
    assert ch["key"] == [] and [p["label"] for p in ch["points"]] == NAMES[:6]
