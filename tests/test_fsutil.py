"""harness.fsutil: the one atomic-write helper of the core."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.fsutil import atomic_write, atomic_write_text

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def test_writes_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "deep" / "er" / "f.json"
    assert atomic_write_text(target, "one") == target
    assert target.read_text() == "one"
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]
    # Permissions follow the umask like any new file (not mkstemp's 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # os.replace of a file onto a folder fails: a real error, mid-write
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_core_modules_use_the_helper():
    """No module of harness/ replaces files by hand: they call harness.fsutil."""
    offenders = [str(p.relative_to(HARNESS)) for p in HARNESS.rglob("*.py")
                 if p.name != "fsutil.py" and any(s in p.read_text(encoding="utf-8") for s in
                                                  ("os.replace", "NamedTemporaryFile", '.tmp"'))]
    assert offenders == []


def test_publish_dir_keeps_the_first_complete_entry(tmp_path):
    from harness.fsutil import publish_dir

    for name, text in (("a", "first"), ("b", "second")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(text)
    final = tmp_path / "entry"
    assert publish_dir(tmp_path / "a", final, complete="meta.json") is True
    final.joinpath("extra").write_text("x")  # a non-empty folder: a second rename onto it fails
    assert publish_dir(tmp_path / "b", final, complete="meta.json") is False
    assert (final / "meta.json").read_text() == "first" and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError):  # the target exists but is no complete entry: a real error
        publish_dir(tmp_path / "c", tmp_path / "a-file", complete="meta.json")
    assert (tmp_path / "c").is_dir()  # nothing removed on a real error


def test_build_and_publish_writes_whole_entries_and_leaves_no_temporary_folder(tmp_path):
    from harness.fsutil import build_and_publish

    final = tmp_path / "cache" / "entry"

    def fill(text):
        def write(tmp):
            assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == final.parent
            (tmp / "meta.json").write_text(text)
            (tmp / "extra").write_text("x")  # a non-empty entry: a second rename onto it fails
        return write

    assert build_and_publish(final, fill("first"), complete="meta.json") is True
    assert build_and_publish(final, fill("second"), complete="meta.json") is False  # theirs kept
    assert (final / "meta.json").read_text() == "first"

    def fails(tmp):
        (tmp / "half").write_text("")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        build_and_publish(tmp_path / "cache" / "other", fails, complete="meta.json")
    assert sorted(p.name for p in final.parent.iterdir()) == ["entry"]  # no temporary folder left
