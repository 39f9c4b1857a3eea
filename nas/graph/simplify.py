"""Elementwise passes an exporter spelled out, folded back into the convs (exact rewrites).

An exported graph often writes one layer as several passes over the features. PP-OCRv4's
detector (paddle2onnx) writes every conv as conv -> Mul(s) -> Add(b), every hard-swish as
x * clip(x + 3, 0, 6) / 6 and the learnable affine after it as Mul(s) -> Add(b) again: eight
passes over a full feature map where the conv could do all but one. On a CPU those passes were
over half of the detector's time, and a delta frame runs them too, on the full features, however
cheap its convs are.

`simplify(gm)` rewrites an fx graph (what onnx2torch returns) in place, until nothing changes:

1. conv -> BatchNorm (eval) | Mul(c) | Add(d), the conv's output read by nothing else, with c and
   d constants (a scalar or one value per output channel): folded into the conv's weight and
   bias (`W' = c W`, `b' = c b + d`).
2. x * relu6(x + 3) / 6 (in either operand order, the division a division by 6): `hardswish(x)`
   (an `nn.Hardswish` module).
3. Mul(h, s) -> Add(., b) with scalar constants s, b, whose result only convs read (as their
   input): s is folded into those convs' weights. b too where every one of them pads nothing
   (`conv(s h + b) = (s W) h + b sum(W) + bias`); otherwise one Add(h, b / s) stays (s nonzero):
   with zero padding the constant must pass through the pad as the original does.

Every rewrite is exact up to float rounding; the folded modules are the graph's own (onnx2torch
makes one per node), changed in place. The conv modules keep their names, so a teacher's layers
(`nas.graph.layers`) are the same convs as before.
"""

from __future__ import annotations

import operator
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn

from nas.graph.fold import folded_conv

# Named in the weights id of a teacher this rewrote: bump it when a rule changes what the convs
# compute (a student made on one version's convs does not fit another's).
SIMPLIFY_TAG = "simplify1"

_ADD = "add"
_MUL = "mul"
_DIV = "div"

_FUNCTIONS = {
    operator.add: _ADD,
    torch.add: _ADD,
    operator.mul: _MUL,
    torch.mul: _MUL,
    operator.truediv: _DIV,
    torch.div: _DIV,
}


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _binary(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """'add', 'mul' or 'div' for a two-operand elementwise node, else None."""
    if node.op == "call_function" and len(node.args) == 2 and not node.kwargs:
        return _FUNCTIONS.get(node.target)
    module = _module(gm, node)
    if module is None or type(module).__name__ != "OnnxBinaryMathOperation" or len(node.args) != 2:
        return None
    if getattr(module, "broadcast", None) == 1 and getattr(module, "axis", None) is not None:
        return None  # old-style broadcasting along an axis: not the plain operation
    function = module.math_op_function
    if function is torch.add:
        return _ADD
    if function is torch.mul:
        return _MUL
    if getattr(function, "__name__", "") == "_onnx_div":
        return _DIV
    return None


def _constant(gm: fx.GraphModule, arg) -> torch.Tensor | None:
    """The value of a constant operand (a float, or a tensor the graph reads), else None."""
    if isinstance(arg, float | int) and not isinstance(arg, bool):
        return torch.tensor(float(arg))
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        value = gm
        for part in str(arg.target).split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.detach()
    return None


def _split(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.Node, torch.Tensor] | None:
    """(the feature operand, the constant) of a binary node with exactly one constant operand;
    the constant is the second operand (for a division, it must be)."""
    first, second = node.args
    c_second, c_first = _constant(gm, second), _constant(gm, first)
    if isinstance(first, fx.Node) and c_first is None and c_second is not None:
        return first, c_second
    commutes = _binary(gm, node) != _DIV
    if commutes and isinstance(second, fx.Node) and c_second is None and c_first is not None:
        return second, c_first
    return None


def _per_channel(value: torch.Tensor, channels: int) -> torch.Tensor | None:
    """`value` as one number per channel of an NCHW tensor, if that is how it broadcasts."""
    if value.dim() > 4:
        return None
    try:
        shape = torch.broadcast_shapes(tuple(value.shape), (1, channels, 1, 1))
    except RuntimeError:
        return None
    if shape != (1, channels, 1, 1):
        return None
    return value.reshape(*([1] * (4 - value.dim())), *value.shape).expand(1, channels, 1, 1)[
        0, :, 0, 0
    ]


def _conv(gm: fx.GraphModule, node: fx.Node, calls: Counter) -> nn.Conv2d | None:
    """The conv `node` calls, if no other node calls it (`calls`: how many nodes call each
    module), so it can be changed."""
    module = _module(gm, node)
    if type(module) is nn.Conv2d and module.padding_mode == "zeros" and calls[node.target] == 1:
        return module
    return None


def _with_bias(conv: nn.Conv2d) -> torch.Tensor:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros_like(conv.weight[:, 0, 0, 0]))
    return conv.bias


@torch.no_grad()
def _fold_into_conv(gm: fx.GraphModule, node: fx.Node, calls: Counter) -> bool:
    """Rule 1 at a conv node: fold the one node that reads it, if that is BN, Mul(c) or Add(d)."""
    conv = _conv(gm, node, calls)
    if conv is None or len(node.users) != 1:
        return False
    (user,) = node.users
    channels = conv.out_channels
    module = _module(gm, user)
    if type(module) is nn.BatchNorm2d and not module.training and module.track_running_stats:
        fused = folded_conv(conv, module)
        conv.weight.copy_(fused.weight)
        _with_bias(conv).copy_(fused.bias)
    else:
        kind = _binary(gm, user)
        split = _split(gm, user) if kind in (_ADD, _MUL) else None
        if split is None or split[0] is not node:
            return False
        value = _per_channel(split[1], channels)
        if value is None:
            return False
        value = value.to(conv.weight.dtype)
        bias = _with_bias(conv)
        if kind == _MUL:
            conv.weight.mul_(value.view(-1, 1, 1, 1))
            bias.mul_(value)
        else:
            bias.add_(value)
    user.replace_all_uses_with(node)
    gm.graph.erase_node(user)
    return True


def _is_relu6(gm: fx.GraphModule, node: fx.Node) -> bool:
    module = _module(gm, node)
    if type(module) is nn.ReLU6:
        return True
    if type(module) is nn.Hardtanh:
        return module.min_val == 0 and module.max_val == 6
    if module is not None and type(module).__name__ == "OnnxClip":
        return getattr(module, "min_val", None) == 0 and getattr(module, "max_val", None) == 6
    return node.op == "call_function" and node.target in (F.relu6,) and len(node.args) == 1


def _equals(value: torch.Tensor, number: float) -> bool:
    return value.numel() == 1 and float(value) == number


def _hardswish(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Rule 2 at a division node: x * relu6(x + 3) / 6 becomes hardswish(x)."""
    if _binary(gm, node) != _DIV:
        return False
    split = _split(gm, node)
    if split is None or not _equals(split[1], 6.0):
        return False
    product = split[0]
    if _binary(gm, product) != _MUL or len(product.users) != 1:
        return False
    for x, clipped in (product.args, product.args[::-1]):
        if not (isinstance(clipped, fx.Node) and _is_relu6(gm, clipped)):
            continue
        shifted = clipped.args[0]
        if not isinstance(shifted, fx.Node) or _binary(gm, shifted) != _ADD:
            continue
        inner = _split(gm, shifted)
        if inner is None or inner[0] is not x or not _equals(inner[1], 3.0):
            continue
        name = f"{node.name}_hardswish"
        gm.add_submodule(name, nn.Hardswish())
        with gm.graph.inserting_before(node):
            fused = gm.graph.call_module(name, (x,))
        node.replace_all_uses_with(fused)
        for dead in (node, product, clipped, shifted):
            if not dead.users:
                gm.graph.erase_node(dead)
        return True
    return False


@torch.no_grad()
def _fold_into_readers(gm: fx.GraphModule, node: fx.Node, calls: Counter) -> bool:
    """Rule 3 at a Mul(h, s) node followed by Add(., b) that only convs read."""
    if _binary(gm, node) != _MUL or len(node.users) != 1:
        return False
    split = _split(gm, node)
    (add,) = node.users
    if split is None or split[1].numel() != 1 or _binary(gm, add) != _ADD:
        return False
    shifted = _split(gm, add)
    if shifted is None or shifted[0] is not node or shifted[1].numel() != 1:
        return False
    h, scale = split[0], float(split[1])
    shift = float(shifted[1])
    readers = list(add.users)
    convs = [_conv(gm, r, calls) for r in readers]
    if not readers or None in convs:
        return False
    if any(r.args != (add,) or r.kwargs for r in readers):
        return False
    unpadded = all(all(p == 0 for p in c.padding) for c in convs)
    if not unpadded and scale == 0:
        return False
    for conv in convs:
        if unpadded:
            _with_bias(conv).add_(shift * conv.weight.sum(dim=(1, 2, 3)))
        conv.weight.mul_(scale)
    if unpadded:
        add.replace_all_uses_with(h)
    else:
        with gm.graph.inserting_before(add):
            offset = gm.graph.call_function(torch.add, (h, shift / scale))
        add.replace_all_uses_with(offset)
    gm.graph.erase_node(add)
    gm.graph.erase_node(node)
    return True


def simplify(gm: fx.GraphModule) -> int:
    """Apply the three rules until none applies; the number of rewrites (0: `gm` unchanged)."""
    # No rule adds or removes a call of a conv, so the counts hold throughout.
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    done = 0
    changed = True
    while changed:
        changed = False
        for node in list(gm.graph.nodes):
            if _module(gm, node).__class__ is nn.Conv2d:
                hit = _fold_into_conv(gm, node, calls)
            else:
                hit = _hardswish(gm, node) or _fold_into_readers(gm, node, calls)
            if hit:
                done += 1
                changed = True
                break  # the node list changed: walk it again
    if done:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    return done
