"""Every registered evaluator runs on a tiny model and reports what its docstring promises."""

import pytest

from evaluators import EVALUATORS
from nas.cost import count_params
from nas.graph import layer_graph


@pytest.mark.parametrize("name", EVALUATORS.names())
def test_every_evaluator_runs(name, tiny_net):
    result = EVALUATORS.get(name)(tiny_net.eval(), input_size=(32, 32))
    assert result and all(value > 0 for value in result.values())


def test_cost_evaluator_matches_layer_sum(tiny_net):
    result = EVALUATORS.get("cost")(tiny_net, input_size=(32, 32))
    assert result["gflops"] * 1e9 == pytest.approx(
        sum(x.macs for x in layer_graph(tiny_net, (32, 32)))
    )
    assert result["params"] == count_params(tiny_net)
