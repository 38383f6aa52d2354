"""Find every BatchNorm in a model, with its context: the conv that feeds it, the activation after
it, the Ultralytics block that owns it and its role in the network.

Blocks are found from the BatchNorm modules themselves, never from activations: Ultralytics'
``Conv.default_act`` is one ``nn.SiLU`` instance shared by every ``Conv``, so ``named_modules()``
lists it once. The walk only reads the model (no hooks, no mode changes).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.io.loader import is_yolo_object

if TYPE_CHECKING:  # the terminal path imports no pandas
    import pandas as pd

__all__ = ["BNBlock", "blocks_frame", "find_blocks", "matches", "unwrap"]

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ACT_TYPES = (
    nn.SiLU,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.ELU,
    nn.PReLU,
    nn.Identity,
)
_LAYER_RE = re.compile(r"^model\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class BNBlock:
    """One BatchNorm and its context. ``name`` (the dotted module name) is the key everywhere.

    Attributes:
        index: position in the walk (module order), 0-based.
        name: dotted module name of the BatchNorm (``model.2.m.0.cv1.bn``).
        bn_type: ``BatchNorm2d``, ``SyncBatchNorm``, ``BatchNorm1d``...
        layer: the top-level Ultralytics layer index N of ``model.N`` (-1 when not under ``model``).
        block: the type of that top-level layer (``C3k2``, ``SPPF``, ``Detect``...).
        owner: the type of the module that holds the BatchNorm (``Conv``, ``DWConv``, ``RepConv``...).
        role: ``backbone``, ``neck`` or ``head`` from the model's yaml; ``unknown`` without one.
        conv, conv_kind: dotted name and type of the conv feeding the BatchNorm ('' when none).
        in_channels, out_channels, kernel, stride, groups, dilation: that conv's geometry.
        act, act_name: the activation type applied to the BN output ('' when none) and its module name.
        act_shared: True when that activation module instance is applied after more than one BN
            (Ultralytics' ``Conv.default_act``: one SiLU shared by every Conv, also after unpickling).
        channels: number of BN channels.
    """

    index: int
    name: str
    bn_type: str
    layer: int
    block: str
    owner: str
    role: str
    conv: str
    conv_kind: str
    in_channels: int | None
    out_channels: int | None
    kernel: str
    stride: str
    groups: int | None
    dilation: str
    act: str
    act_name: str
    act_shared: bool
    channels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_blocks(model: Any) -> list[BNBlock]:
    """Every BatchNorm in ``model`` exactly once, in module order, with its context.

    Args:
        model: an ``nn.Module``, a ``yolobn.LoadedModel`` or an ``ultralytics.YOLO``.

    Returns:
        A list of BNBlock, one per BatchNorm module (shared modules are listed once).
    """
    root = unwrap(model)
    modules = dict(root.named_modules())
    roles = _roles(root)
    found = []
    for name, mod in modules.items():
        if not isinstance(mod, _BatchNorm):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = modules.get(parent_name, root) if parent_name else root
        conv_name, conv = _feeding_conv(parent, parent_name, attr)
        act_name, act = _activation_after(parent, parent_name, attr)
        found.append((name, mod, parent_name, parent, conv_name, conv, act_name, act))
    uses: dict[int, int] = {}
    for *_, act in found:
        if act is not None:
            uses[id(act)] = uses.get(id(act), 0) + 1
    blocks: list[BNBlock] = []
    for name, mod, parent_name, parent, conv_name, conv, act_name, act in found:
        m = _LAYER_RE.match(name)
        layer = int(m.group(1)) if m else -1
        top = modules.get(f"model.{layer}") if layer >= 0 else None
        blocks.append(
            BNBlock(
                index=len(blocks),
                name=name,
                bn_type=type(mod).__name__,
                layer=layer,
                block=type(top).__name__ if top is not None else "",
                owner=type(parent).__name__ if parent_name else "",
                role=roles.get(layer, "unknown"),
                conv=conv_name,
                conv_kind=type(conv).__name__ if conv is not None else "",
                in_channels=getattr(conv, "in_channels", None),
                out_channels=getattr(conv, "out_channels", None),
                kernel=_pair(getattr(conv, "kernel_size", None)),
                stride=_pair(getattr(conv, "stride", None)),
                groups=getattr(conv, "groups", None),
                dilation=_pair(getattr(conv, "dilation", None)),
                act=type(act).__name__ if act is not None else "",
                act_name=act_name,
                act_shared=act is not None and uses[id(act)] > 1,
                channels=int(mod.num_features),
            )
        )
    return blocks


def matches(block: Any, patterns: Sequence[str]) -> bool:
    """The one layer-selection rule (``--layers``): a glob on the dotted name, or an exact block
    type, owner type or role. ``block`` is anything with those attributes (a BNBlock, a table row)."""
    return any(
        fnmatch.fnmatchcase(block.name, p) or p in (block.block, block.owner, block.role) for p in patterns
    )


def blocks_frame(model: Any) -> pd.DataFrame:
    """``find_blocks`` as a pandas DataFrame indexed by the dotted BN name."""
    import pandas as pd

    rows = [b.to_dict() for b in find_blocks(model)]
    cols = list(BNBlock.__dataclass_fields__)
    return pd.DataFrame(rows, columns=cols).set_index("name", drop=False)


def unwrap(model: Any) -> nn.Module:
    """The nn.Module inside a LoadedModel or an ultralytics.YOLO (the module itself otherwise)."""
    if isinstance(model, nn.Module) and not is_yolo_object(model):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise TypeError(
        f"expected an nn.Module, a yolobn.LoadedModel or an ultralytics.YOLO, got {type(model).__name__}"
    )


def _roles(root: nn.Module) -> dict[int, str]:
    """Layer index -> backbone/neck/head from the model yaml (the last layer is the head)."""
    cfg = getattr(root, "yaml", None)
    layers = getattr(root, "model", None)
    if not isinstance(cfg, dict) or not isinstance(layers, (nn.Sequential, nn.ModuleList)):
        return {}
    n_backbone = len(cfg.get("backbone") or [])
    n = len(layers)
    roles = {}
    for i in range(n):
        if i == n - 1:
            roles[i] = "head"
        elif i < n_backbone:
            roles[i] = "backbone"
        else:
            roles[i] = "neck"
    return roles


def _feeding_conv(parent: nn.Module, parent_name: str, attr: str) -> tuple[str, nn.Module | None]:
    prefix = f"{parent_name}." if parent_name else ""
    # Ultralytics Conv/DWConv/Conv2 (`conv`), ConvTranspose (`conv_transpose`).
    if attr == "bn":
        for cand in ("conv", "conv_transpose"):
            c = getattr(parent, cand, None)
            if isinstance(c, _CONV_TYPES):
                return prefix + cand, c
    # bn1 <- conv1, norm2 <- conv2 (torchvision ResNet blocks and similar).
    m = re.fullmatch(r"(?:bn|norm)(\d*)", attr)
    if m:
        c = getattr(parent, f"conv{m.group(1)}", None)
        if isinstance(c, _CONV_TYPES):
            return f"{prefix}conv{m.group(1)}", c
    # nn.Sequential(Conv2d, BatchNorm2d, ...) (RT-DETR input projection, torchvision downsample).
    if isinstance(parent, nn.Sequential) and attr.isdigit() and int(attr) > 0:
        prev = parent[int(attr) - 1]
        if isinstance(prev, _CONV_TYPES):
            return f"{prefix}{int(attr) - 1}", prev
    return "", None


def _activation_after(parent: nn.Module, parent_name: str, attr: str) -> tuple[str, nn.Module | None]:
    prefix = f"{parent_name}." if parent_name else ""
    if isinstance(parent, nn.Sequential) and attr.isdigit():
        i = int(attr) + 1
        if i < len(parent) and isinstance(parent[i], _ACT_TYPES):
            return f"{prefix}{i}", parent[i]
        return "", None
    # Only read an activation off the parent where the naming pairs it with this BN: Ultralytics
    # Conv (conv, bn, act), torchvision blocks (bn1/bn2 then the block's relu). Anything else is a
    # guess, and a wrong activation would make the "off" criterion wrong: report none instead.
    m = re.fullmatch(r"(?:bn|norm)(\d*)", attr)
    if m:
        k = m.group(1)
        for cand in (f"act{k}", f"relu{k}", "act", "relu") if k else ("act", "relu", "activation"):
            a = getattr(parent, cand, None)
            if isinstance(a, _ACT_TYPES):
                return prefix + cand, a
    return "", None


def _pair(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (tuple, list)):
        return "x".join(str(int(x)) for x in v)
    return str(v)
