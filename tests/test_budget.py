"""Budget strings: every documented form parses to the right kind and value; others fail clearly."""

import pytest

from nas.core.errors import NasError
from nas.cost.budget import Budget, CostKind, parse_budget


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("5GFLOPs", CostKind.MACS, 5e9),
        ("5 GFLOPs", CostKind.MACS, 5e9),
        ("5GMACs", CostKind.MACS, 5e9),
        ("5gflops", CostKind.MACS, 5e9),
        ("500MFLOPs", CostKind.MACS, 5e8),
        ("1.5TFLOPs", CostKind.MACS, 1.5e12),
        ("2.5e9", CostKind.MACS, 2.5e9),
        ("40ms", CostKind.LATENCY, 0.04),
        ("40 ms", CostKind.LATENCY, 0.04),
        ("0.5s", CostKind.LATENCY, 0.5),
        ("800us", CostKind.LATENCY, 8e-4),
    ],
)
def test_parses(text, kind, value):
    budget = parse_budget(text)
    assert budget.kind is kind
    assert budget.value == pytest.approx(value)


@pytest.mark.parametrize(
    "text", ["", "five", "5 parsecs", "GFLOPs", "5G", "-5GFLOPs", "0ms", "5GFLOPs!", "1e999"]
)
def test_rejects_with_examples(text):
    with pytest.raises(NasError) as info:
        parse_budget(text)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{text}'" in message and "5GFLOPs" in message and "40ms" in message


def test_round_trips_through_str():
    for text in ("5GFLOPs", "40ms", "750MFLOPs", "2.5KFLOPs", "1.5TFLOPs"):
        budget = parse_budget(text)
        assert parse_budget(str(budget)) == budget
    assert str(Budget(CostKind.MACS, 5e9)) == "5GFLOPs"
