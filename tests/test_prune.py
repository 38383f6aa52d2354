"""Physical pruning (yolobn.edit.prune): removal equals ablation on planted models (exactly in the
interior, by the closed-form border term at the border), the dependency graph on every Ultralytics
block built from its yamls, the selection rules, and nothing of the input changed."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import C2PSA, Bottleneck, C2f, Concat, Conv
from ultralytics.nn.tasks import BaseModel

from tests.corpus import trained_statistics
from yolobn.core.errors import YolobnError
from yolobn.edit.ablation import AblationPlan, ablate
from yolobn.edit.prune import check_selection, remove, select
from yolobn.edit.prune_graph import build_graph
from yolobn.edit.prune_residual import border_mask, border_residual


class Net(BaseModel):
    """Ultralytics' own layer routing (``_predict_once``: ``f`` and ``save``) around planted layers."""

    def __init__(self, layers: list[nn.Module], froms: list) -> None:
        super().__init__()
        for i, (m, f) in enumerate(zip(layers, froms, strict=True)):
            m.f, m.i, m.type = f, i, type(m).__name__
        self.model = nn.Sequential(*layers)
        self.save = sorted({j for f in froms for j in ([f] if isinstance(f, int) else f) if j != -1})


def planted(layers: list[nn.Module], froms: list) -> Net:
    torch.manual_seed(0)
    net = Net(layers, froms)
    trained_statistics(net)
    with torch.no_grad():
        for bn in net.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def consts(graph, seed: int = 1, zero: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        n: np.zeros(p.channels) if zero else rng.uniform(-1, 2, p.channels)
        for n, p in graph.producers.items()
    }


def ablated(net: nn.Module, channels: dict, values: dict) -> nn.Module:
    return ablate(
        net,
        AblationPlan(
            channels=channels, values={n: [float(values[n][c]) for c in cs] for n, cs in channels.items()}
        ),
    )


def outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in outputs(v)]
    return []


# --------------------------------------------------------------------------------------------------
# the fold, in closed form


def test_conv_chain_interior_exact_border_is_the_padding_term():
    """Conv(1x1) -> Conv(3x3, no activation): channel 1 of the first removed with constant 0.7. At
    every pixel the pruned output minus the ablated one is gamma/sqrt(var+eps) times the part of
    W[:, 1] * 0.7 that falls on the zero padding: 0 inside, not 0 on the border."""
    net = planted([Conv(3, 4, 1, 1), Conv(4, 3, 3, 1, act=False)], [-1, -1])
    g = build_graph(net)
    k = np.array([0.0, 0.7, 0.0, 0.0])
    pruned = remove(net, g, {"model.0.bn": [1]}, {"model.0.bn": k, "model.1.bn": np.zeros(3)})
    ab = ablated(net, {"model.0.bn": [1]}, {"model.0.bn": k})
    x = torch.rand(2, 3, 12, 12)
    with torch.no_grad():
        diff = pruned(x) - ab(x)
    conv, bn = net.model[1].conv, net.model[1].bn
    w = conv.weight[:, 1:2].detach()
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().view(1, -1, 1, 1)
    inside = F.conv2d(torch.full((1, 1, 12, 12), 0.7), w, padding=1)  # what the ablated model sums
    expected = scale * (0.7 * w.sum(dim=(1, 2, 3)).view(1, -1, 1, 1) - inside)
    assert torch.allclose(diff, expected.expand_as(diff), atol=1e-5)
    border = border_mask(conv, 12, 12)
    assert border.sum() == 12 * 12 - 10 * 10 and not border[1:-1, 1:-1].any()
    assert diff[..., ~border].abs().max() < 1e-5
    assert diff[..., border].abs().max() > 0.01  # the test would see a fold that did nothing
    assert pruned.model[0].conv.out_channels == 3 and pruned.model[1].conv.in_channels == 3


def test_border_residual_measures_interior_and_border():
    net = planted([Conv(3, 4, 1, 1), Conv(4, 3, 3, 1, act=False)], [-1, -1])
    g = build_graph(net)
    values = consts(g)
    pruned = remove(net, g, {"model.0.bn": [1, 2]}, values)
    ab = ablated(net, {"model.0.bn": [1, 2]}, values)
    layers, s = border_residual(ab, pruned, g, {"model.0.bn": [1, 2]}, [torch.rand(2, 3, 16, 16)])
    assert list(layers["layer"]) == ["model.1.conv"] and layers["kernel"][0] == "3x3/1"
    assert s["interior_max"] < 1e-5 < 1e-2 < s["border_max"]
    assert layers["border_pixels"][0] == pytest.approx(1 - 14 * 14 / 256)


def test_one_by_one_net_with_add_and_concat_is_exact_everywhere():
    """No padding anywhere (1x1 convs): removal equals ablation at every pixel, with constants that
    are not 0, through a residual add (the sum of both constants) and a concat."""
    layers = [
        Conv(3, 8, 1),
        Bottleneck(8, 8, shortcut=True, k=((1, 1), (1, 1)), e=0.5),
        Conv(8, 6, 1),
        Concat(1),
        Conv(14, 4, 1, act=False),
    ]
    net = planted(layers, [-1, -1, -1, [-1, 1], -1])
    g = build_graph(net)
    rng = np.random.default_rng(0)
    scores = {n: rng.random(p.channels) for n, p in g.producers.items()}
    sel = select(g, scores, 10)
    assert sel.count >= 10 and "model.0.bn" in sel.channels
    tied = sel.channels["model.0.bn"]  # model.0's channels are added to the bottleneck's cv2: cut together
    assert sel.channels["model.1.cv2.bn"] == tied
    values = consts(g)
    pruned, ab = remove(net, g, sel.channels, values), ablated(net, sel.channels, values)
    x = torch.rand(2, 3, 9, 9)
    with torch.no_grad():
        a, p = ab(x), pruned(x)
    assert torch.allclose(a, p, atol=1e-5) and (a - net(x)).abs().max() > 0.01


# --------------------------------------------------------------------------------------------------
# selection and its rules


def test_c2f_halves_lose_the_same_number():
    net = planted([Conv(3, 8, 1), C2f(8, 8, n=1, shortcut=False), Conv(8, 4, 1)], [-1, -1, -1])
    g = build_graph(net)
    scores = {n: np.full(p.channels, 9.0) for n, p in g.producers.items()}
    scores["model.1.cv1.bn"] = np.array(
        [0.0, 0.1, 0.2, 0.3, 0.9, 0.95, 0.99, 0.999]
    )  # half a cheap, half b dear
    sel = select(g, scores, 2)
    assert sel.channels == {"model.1.cv1.bn": [0, 4]}  # one from each half, not the two cheapest
    values = consts(g, zero=True)
    pruned = remove(net, g, sel.channels, values)
    assert pruned.model[1].c == 3 and pruned.model[1].cv1.conv.out_channels == 6
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(pruned(x), ablated(net, sel.channels, values)(x), atol=1e-6)
    with pytest.raises(YolobnError, match="equal halves"):
        check_selection(g, {"model.1.cv1.bn": [0, 1]})


def test_selection_never_breaks_a_class_a_fixed_channel_or_empties_a_layer():
    # 128 wide: C2PSA's attention has c // 64 heads (Ultralytics 8.3 divides by zero below 128)
    net = planted(
        [Conv(3, 128, 1), Bottleneck(128, 128, shortcut=True), C2PSA(128, 128), Conv(128, 2, 1)], [-1] * 4
    )
    g = build_graph(net)
    with pytest.raises(YolobnError, match="goes with"):
        check_selection(g, {"model.0.bn": [3]})  # added to model.1.cv2's channel 3
    with pytest.raises(YolobnError, match="cannot be removed"):
        check_selection(g, {"model.2.cv1.bn": [0]})  # the split of C2PSA feeds its attention
    with pytest.raises(YolobnError, match="leave nothing"):
        check_selection(g, {"model.3.bn": [0, 1]})
    scores = {n: np.zeros(p.channels) for n, p in g.producers.items()}  # everything ties: all want to go
    sel = select(g, scores, 10_000)
    assert all(len(cs) < g.producers[n].channels for n, cs in sel.channels.items())
    assert "model.2.cv1.bn" not in sel.channels and "model.2.m.0.attn.qkv.bn" not in sel.channels
    assert "model.2.m.0.ffn.0.bn" in sel.channels  # the attention's feed-forward hidden layer is free
    check_selection(g, sel.channels)  # whole classes, equal halves: accepted as it is


# --------------------------------------------------------------------------------------------------
# every block, on models built from Ultralytics' own yamls


def _yaml(name: str, cls: str, *, slow: bool = True) -> object:
    """A model yaml Ultralytics ships (YOLO26 only from 8.4); the slower ones (> 15 s here) run with
    ``-m slow``."""
    import ultralytics

    base = name.replace("n.yaml", ".yaml").replace("n-", "-")  # yolo11n-seg.yaml -> yolo11-seg.yaml
    shipped = any((Path(ultralytics.__file__).parent / "cfg" / "models").rglob(base))
    marks = [pytest.mark.slow] if slow else []
    if not shipped:
        marks.append(pytest.mark.skip(reason=f"{name}: not shipped by Ultralytics {ultralytics.__version__}"))
    return pytest.param(name, cls, marks=marks, id=name)


YAMLS = [
    _yaml("yolo11n.yaml", "DetectionModel"),
    _yaml("yolo11n-seg.yaml", "SegmentationModel"),
    _yaml("yolo11n-pose.yaml", "PoseModel"),
    _yaml("yolo11n-obb.yaml", "OBBModel"),
    _yaml("yolo11n-cls.yaml", "ClassificationModel", slow=False),
    _yaml("yolov8n.yaml", "DetectionModel"),
    _yaml("yolo26n.yaml", "DetectionModel"),
    _yaml("yolo26n-seg.yaml", "SegmentationModel"),
    _yaml("yolo26n-pose.yaml", "PoseModel"),
]


def _build(yaml: str, cls: str) -> nn.Module:
    from ultralytics.nn import tasks

    torch.manual_seed(0)
    m = getattr(tasks, cls)(yaml, verbose=False)
    trained_statistics(m)
    return m.eval()


@pytest.mark.parametrize("yaml,cls", YAMLS)
def test_removal_equals_ablation_on_ultralytics_models(yaml, cls):
    """30% of the channels (random ranking) removed. With constants 0 there is no border term: the
    pruned model's outputs equal the ablated model's everywhere, which checks every edge of the
    graph. With constants that are not 0, every folded layer matches inside and differs only on
    its border; the pruned model also trains (train-mode forward) and is smaller."""
    net = _build(yaml, cls)
    g = build_graph(net)
    assert g.opaque == {}  # every block of these models has a rule
    rng = np.random.default_rng(0)
    sel = select(g, {n: rng.random(p.channels) for n, p in g.producers.items()}, int(0.3 * sel_total(g)))
    assert sel.share == pytest.approx(30, abs=0.5)
    zero = consts(g, zero=True)
    pruned = remove(net, g, sel.channels, zero)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, p = outputs(ablated(net, sel.channels, zero)(x)), outputs(pruned(x))
    same = [(u, v) for u, v in zip(a, p, strict=True) if u.shape == v.shape]  # the head's inputs are narrower
    assert same and all(torch.allclose(u, v, atol=1e-5 * max(1.0, float(u.abs().max()))) for u, v in same)
    assert sum(q.numel() for q in pruned.parameters()) < 0.8 * sum(q.numel() for q in net.parameters())
    values = consts(g)
    layers, s = border_residual(
        ablated(net, sel.channels, values), remove(net, g, sel.channels, values), g, sel.channels, [x]
    )
    assert len(layers) > 10 and s["interior_max"] < 1e-3 and s["border_max"] > s["interior_max"]
    pruned.train()
    assert outputs(pruned(x))  # the training forward pass runs at the new widths


def sel_total(g) -> int:
    return sum(p.channels for p in g.producers.values())


def test_blocks_without_a_rule_are_left_whole_and_still_exact():
    """YOLOv10's CIB and YOLOv9's RepConv have no rule: they and what touches them stay, the rest is
    pruned, and removal still equals ablation."""
    net = _build("yolov10n.yaml", "DetectionModel")
    g = build_graph(net)
    assert set(g.opaque) == {"model.22.m.0"} and "CIB" in g.opaque["model.22.m.0"]
    rng = np.random.default_rng(0)
    sel = select(g, {n: rng.random(p.channels) for n, p in g.producers.items()}, int(0.3 * sel_total(g)))
    assert not any(n.startswith("model.22.m.0.") for n in sel.channels)
    zero = consts(g, zero=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = outputs(ablated(net, sel.channels, zero)(x))[0]
        p = outputs(remove(net, g, sel.channels, zero)(x))[0]
    assert torch.allclose(a, p, atol=1e-4)


def test_the_input_model_is_not_changed():
    net = _build("yolo11n.yaml", "DetectionModel")
    before = copy.deepcopy(net.state_dict())
    g = build_graph(net)
    sel = select(g, {n: np.arange(p.channels, dtype=float) for n, p in g.producers.items()}, 500)
    remove(net, g, sel.channels, consts(g))
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_the_dead_channel_answer_names_prune_with_the_users_paths(tmp_path):
    from tests.test_activations import _images, _inputs, _plant_one_block
    from yolobn.bn.answers import Paths, inspection_verdicts
    from yolobn.run.observation import observe

    d = _images(tmp_path)
    ins = observe(_plant_one_block(_inputs(d)), [str(d)], imgsz=32, batch=4)  # 3 of 5 observed dead
    user = Paths(model="runs/best.pt", images=(str(d),), data="data.yaml")
    (dead,) = [v for v in inspection_verdicts(ins, user) if v.key == "dead"]
    assert dead.status != "ok"
    assert dead.next == f"yolobn prune runs/best.pt --data data.yaml --images {d} -o runs/best-pruned.pt"
    (demo,) = [v for v in inspection_verdicts(ins, Paths(demo=True)) if v.key == "dead"]
    assert demo.next == "yolobn prune -o demo-pruned.pt"  # the demo's images and dataset are the defaults
