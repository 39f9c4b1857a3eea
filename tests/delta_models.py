"""Delta models of a teacher with given picks, for the tests of what runs on delta frames."""

from nas.delta.liveness import read_wiring
from nas.delta.model import DeltaModel
from nas.delta.replay import replay_for
from nas.graph.layers import layer_graph
from search_spaces import build_candidate


def delta_model(teacher, picks: dict[str, str], size, *, replay: bool) -> DeltaModel:
    """`teacher`'s delta model with `picks` (layer path -> candidate) at input `size`, in eval
    mode; `replay`: skipping on delta frames what the `zero` picks leave unchanged."""
    layers = layer_graph(teacher.module, size)

    def make(layer, conv):
        return build_candidate(picks[layer.path], layer, weight=conv.weight.detach())

    model = DeltaModel.build(teacher.module, layers, make, output_key=teacher.output_key).eval()
    if replay:
        model.use_replay(replay_for(model, read_wiring(model, size), picks))
    return model
