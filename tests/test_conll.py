"""CoNLL reader: the real files' quirks (IOB1/IOB2, -DOCSTART-, BOMs, tab-only lines, trailing
blank lines) and clear errors on corrupt files."""

from __future__ import annotations

import pytest
from tiny_tasks import data

from harness.errors import DataError
from harness_plugins._lib.conll import entity_counts, iob1_to_iob2, label_list, read_conll


def test_conll2003_test_split_entity_counts():
    split = read_conll(data("conll2003", "test.txt"))
    assert split.scheme == "iob1"
    assert len(split.sentences) == 3453
    assert sum(len(s.tokens) for s in split.sentences) == 46435
    assert split.documents == 231
    counts = entity_counts(split.tags)
    assert dict(counts) == {"PER": 1617, "LOC": 1668, "ORG": 1661, "MISC": 702}
    assert sum(counts.values()) == 5648


@pytest.mark.parametrize("name", ["test.txt", "validation.txt"])
def test_iob1_files_convert_to_the_published_iob2_files(name):
    iob1 = read_conll(data("conll2003", name))
    iob2 = read_conll(data("conll2003_iob2", name))
    assert (iob1.scheme, iob2.scheme) == ("iob1", "iob2")
    assert iob1.tokens == iob2.tokens
    assert iob1.tags == iob2.tags  # tag for tag, after the one conversion on reading


def test_wnut17_layout_tab_only_lines_and_byte_order_marks():
    train = read_conll(data("wnut17", "train.conll"))
    val = read_conll(data("wnut17", "validation.conll"))
    test = read_conll(data("wnut17", "test.conll"))
    assert [len(s.sentences) for s in (train, val, test)] == [3394, 1009, 1287]
    assert sum(entity_counts(train.tags).values()) == 1975
    assert sum(entity_counts(test.tags).values()) == 1079
    # validation: 835 B- tags plus one entity that starts with I- right after another type
    # ("Sly-/I-person Turn/I-creative-work"); conlleval (and seqeval default) count 836
    assert sum(entity_counts(val.tags).values()) == 836
    tokens = [t for s in val.sentences for t in s.tokens]
    assert "Dubbz" in tokens and not any("\ufeff" in t for t in tokens)


def test_synthetic_quirks(tmp_path):
    f = tmp_path / "quirks.txt"
    f.write_bytes(
        (
            "\ufeff-DOCSTART- -X- O O\n\n"
            "EU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n\n"
            "\t\n"  # a tab-only separator line
            "-DOCSTART- -X- -X- O\n"
            "Peter\tB-PER\n"  # two columns, tab separated
            "Blackburn\tI-PER\r\n"
            " \t \n"
            "A B C D E B-LOC\nnbsp\u00a0word x I-LOC\n"  # six columns; U+00A0 inside a token
            "\n\n\n"
        ).encode()
    )
    split = read_conll(f)
    assert split.documents == 2
    assert [s.tokens for s in split.sentences] == [
        ["EU", "rejects", "German"], ["Peter", "Blackburn"], ["A", "nbsp\u00a0word"],
    ]
    assert [s.tags for s in split.sentences] == [
        ["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC", "I-LOC"],
    ]
    assert split.sentences[0].line == 3
    assert split.scheme == "iob1"


def test_iob1_to_iob2_rule():
    assert iob1_to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        "B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG",
    ]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert iob1_to_iob2(iob2) == iob2
    assert label_list({"PER", "LOC"}) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_scheme_iob2_rejects_iob1_file(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("a O\nb I-PER\n")
    with pytest.raises(DataError, match=r"x\.txt:2: .*starts an entity"):
        read_conll(f, scheme="iob2")
    assert read_conll(f, scheme="iob1").tags == [["O", "B-PER"]]


@pytest.mark.parametrize(
    "content, line, what",
    [
        ("a O\nb B-PER\nlonely\n", 3, "expected a token and a tag"),
        ("a O\n\nb X-PER\n", 3, "not IOB"),
        ("a O\nb PER\n", 2, "not IOB"),
    ],
)
def test_corrupt_lines_name_file_and_line(tmp_path, content, line, what):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(DataError, match=rf"bad\.txt:{line}: .*{what}"):
        read_conll(f)


def test_bad_encoding_and_missing_or_empty_file(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"a O\ncaf\xe9 B-LOC\n")
    with pytest.raises(DataError, match=r"latin1\.txt:2: not valid UTF-8"):
        read_conll(f)
    with pytest.raises(DataError, match="nope.txt: data file not found"):
        read_conll(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("-DOCSTART- -X- O O\n\n")
    with pytest.raises(DataError, match="no sentences"):
        read_conll(tmp_path / "empty.txt")
