"""The paper's published numbers as data (`report/published/paper.csv`), checked against the paper's text.

Every cell of Tables 1–5 and every result the text quotes, with its source; where the text and a table
disagree, both are kept with a note.  The values below were read off the paper by hand.
"""

import csv
from collections import Counter
from pathlib import Path

import pytest

from noisekd.methods import METHODS

PUBLISHED = Path(__file__).resolve().parent.parent / "report" / "published" / "paper.csv"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    with open(PUBLISHED, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _one(rows, **where) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]


def test_hand_read_values(rows):
    hinton = _one(rows, table="Table 1", dataset="cifar10", method="hinton", metric="test_acc")
    assert (hinton["mean"], hinton["std"]) == ("94.28", "0.09")
    assert _one(rows, table="Table 1", dataset="svhn", method="teacher", dropout="0.5",
                metric="teacher_test_acc")["mean"] == "97.00"
    assert _one(rows, table="Table 2", method="rkd_d+ft", metric="ood_acc")["mean"] == "69.60"
    assert _one(rows, table="Table 3", dataset="svhn", method="sr", sigma="0.2", metric="test_acc")["std"] == "0.22"
    sr = _one(rows, table="Table 4", dataset="cifar10", method="sr", sigma="0.05", steps="20")
    assert (sr["mean"], sr["std"], sr["eps_255"]) == ("15.56", "0.44", "8")
    assert _one(rows, table="Table 5", dataset="svhn", method="sr", sigma="0.5", eps_255="200")["mean"] == "1.02"


def test_the_tables_are_complete(rows):
    """Rows per table as the paper prints them: Table 1, 12 methods x (CIFAR-10 test, OOD, mCA; SVHN test)
    and 12 teacher cells (the plain one once per dataset, each FT teacher); Table 2, 5 methods x 6;
    Table 3, 10 σ x 6; Table 4, 8 rows x 7 printed values; Table 5, 4 CIFAR-10 rows x 7 and 4 SVHN x 8."""
    counts = Counter(r["table"] for r in rows)
    assert counts["Table 1"] == 12 * 4 + 12 and counts["Table 2"] == 5 * 6 and counts["Table 3"] == 10 * 6
    assert counts["Table 4"] == 8 * 7 and counts["Table 5"] == 4 * 7 + 4 * 8
    assert {r["metric"] for r in rows} == {"test_acc", "ood_acc", "mca", "teacher_test_acc", "robust_acc"}
    assert {r["method"] for r in rows} <= set(METHODS) | {"teacher"}
    assert all(float(r["mean"]) >= 0 and (r["std"] == "" or float(r["std"]) >= 0) for r in rows)
    assert all(r["source"] for r in rows)


def test_the_text_and_table_4_disagree_on_svhn_and_both_are_kept(rows):
    text = {r["method"]: r for r in rows if r["table"] == "text" and r["dataset"] == "svhn"
            and r["metric"] == "robust_acc" and "§4.2" in r["source"]}
    assert (text["sr"]["mean"], text["ga"]["mean"]) == ("51.39", "25.94")
    table = {m: _one(rows, table="Table 4", dataset="svhn", method=m, sigma="0.2", steps="20") for m in ("sr", "ga")}
    assert (table["sr"]["mean"], table["ga"]["mean"]) == ("24.14", "12.19")
    assert "24.14" in text["sr"]["note"] and "51.39" in table["sr"]["note"]
