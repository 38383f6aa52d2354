"""The rules of the channel-dependency graph (``yolobn.edit.prune_graph``): one per Ultralytics block
type, each following that block's ``forward`` (ultralytics/nn/modules/block.py, head.py) channel by
channel.

A rule takes the tracer ``t``, the block's dotted path, the block and its input (a ``Desc``: one
tuple of producer-channel ids per channel; a list of them for blocks that take several tensors) and
returns its output. It registers what the block reads (``t.conv``, ``t.plain_conv``, ``t.linear``),
ties what is added (``t.add``), fixes what must stay (``t.fix``) and marks every module it accounts
for (``t.visit``). Ultralytics' classes are looked up by name in the installed release, so a class
that a release lacks simply has no rule (its blocks are left whole).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

__all__ = ["HEAD_OUT", "IMAGE", "Chan", "Desc", "Mismatch", "Rule", "flat", "many", "one", "rules"]

Chan = tuple[int, ...]  # the producer channels (global ids) summed into one tensor channel
Desc = list[Chan]  # a tensor: one Chan per channel
Rule = Callable[[str, Any, Any], Any]

IMAGE = "the image input"
HEAD_OUT = "a head output (its width is the number of classes, box bins, mask coefficients or keypoints)"


class Mismatch(Exception):
    """A rule met a structure it does not expect: the block is left whole."""


def one(x: Any) -> Desc:
    """The input of a block that takes one tensor."""
    if not isinstance(x, list) or (x and not isinstance(x[0], tuple)):
        raise Mismatch("a block that takes one tensor was given several")
    return x


def many(x: Any) -> list[Desc]:
    """The inputs of a block that takes a list of tensors."""
    if not isinstance(x, list) or not all(isinstance(d, list) for d in x):
        raise Mismatch("a block that takes several tensors was given one")
    return x


def flat(x: Any) -> Iterator[Chan]:
    """Every channel of a Desc or of a list of them."""
    if isinstance(x, list) and x and isinstance(x[0], list):
        for part in x:
            yield from flat(part)
    elif isinstance(x, list):
        yield from x


def rules(t: Any) -> dict[type, Rule]:
    """The rule of every block type the pruner knows, by exact type (a subclass may change forward)."""
    from ultralytics.nn.modules import block as b
    from ultralytics.nn.modules import conv as c
    from ultralytics.nn.modules import head as h

    def same(path: str, m: Any, x: Any) -> Desc:
        return one(x)  # channel-preserving: a constant channel stays the same constant

    table: dict[type, Rule] = {
        nn.Sequential: lambda p, m, x: _sequential(t, p, m, x),
        nn.Conv2d: lambda p, m, x: t.plain_conv(p, m, x),
        nn.Upsample: same,  # nearest or bilinear: a constant stays a constant
        nn.MaxPool2d: same,  # padded with -inf: a constant stays a constant, borders included
        nn.Identity: same,
        nn.Dropout: same,
    }
    named: dict[Any, Rule] = {
        (c, "Conv"): t.conv,
        (c, "DWConv"): t.conv,
        (c, "Concat"): lambda p, m, x: _concat(p, m, x),
        (b, "Bottleneck"): lambda p, m, x: _bottleneck(t, p, m, x),
        (b, "RepBottleneck"): lambda p, m, x: _bottleneck(t, p, m, x),
        (b, "C2f"): lambda p, m, x: _c2f(t, p, m, x, _inner(p, m)),
        (b, "C3k2"): lambda p, m, x: _c2f(t, p, m, x, _inner(p, m)),
        (b, "C2fPSA"): lambda p, m, x: _c2f(t, p, m, x, _inner(p, m)),
        (b, "C2fCIB"): lambda p, m, x: _c2f(t, p, m, x, _inner(p, m)),
        (b, "ELAN1"): lambda p, m, x: _c2f(t, p, m, x, [(f"{p}.cv2", m.cv2), (f"{p}.cv3", m.cv3)], "cv4"),
        (b, "RepNCSPELAN4"): lambda p, m, x: _c2f(
            t, p, m, x, [(f"{p}.cv2", m.cv2), (f"{p}.cv3", m.cv3)], "cv4"
        ),
        (b, "C3"): lambda p, m, x: _c3(t, p, m, x),
        (b, "RepCSP"): lambda p, m, x: _c3(t, p, m, x),
        (b, "C3k"): lambda p, m, x: _c3(t, p, m, x),
        (b, "C3x"): lambda p, m, x: _c3(t, p, m, x),
        (b, "SPPF"): lambda p, m, x: _sppf(t, p, m, x),
        (b, "SPP"): lambda p, m, x: _spp(t, p, m, x),
        (b, "SPPELAN"): lambda p, m, x: _sppelan(t, p, m, x),
        (b, "AConv"): lambda p, m, x: t.apply(f"{p}.cv1", m.cv1, one(x)),  # a 2x2 average pool, no padding
        (b, "ADown"): lambda p, m, x: _adown(t, p, m, x),
        (b, "SCDown"): lambda p, m, x: t.apply(f"{p}.cv2", m.cv2, t.apply(f"{p}.cv1", m.cv1, one(x))),
        (b, "C2PSA"): lambda p, m, x: _c2psa(t, p, m, x),
        (b, "PSA"): lambda p, m, x: _psa(t, p, m, x),
        (b, "PSABlock"): lambda p, m, x: _psablock(t, p, m, x),
        (b, "Attention"): lambda p, m, x: _attention(t, p, m, x),
        (b, "Proto"): lambda p, m, x: _proto(t, p, m, one(x)),
        (b, "Proto26"): lambda p, m, x: _proto26(t, p, m, x),
        (h, "Classify"): lambda p, m, x: _classify(t, p, m, x),
    }
    for name in ("Detect", "Segment", "Pose", "OBB", "v10Detect", "Segment26", "Pose26", "OBB26"):
        named[(h, name)] = lambda p, m, x: _detect(t, p, m, x)
    for (mod, name), rule in named.items():
        cls = getattr(mod, name, None)
        if isinstance(cls, type):
            table[cls] = rule
    return table


def _sequential(t: Any, path: str, m: nn.Sequential, x: Any) -> Any:
    for i, sub in enumerate(m):
        x = t.apply(f"{path}.{i}", sub, x)
    return x


def _concat(path: str, m: Any, x: Any) -> Desc:
    if getattr(m, "d", 1) != 1:
        raise Mismatch(f"{path} concatenates along dimension {m.d}, not channels")
    return [chan for d in many(x) for chan in d]


def _bottleneck(t: Any, path: str, m: Any, x: Any) -> Desc:
    x = one(x)
    y = t.apply(f"{path}.cv2", m.cv2, t.apply(f"{path}.cv1", m.cv1, x))
    return one(t.add(x, y) if getattr(m, "add", False) else y)


def _inner(path: str, m: Any) -> list[tuple[str, Any]]:
    return [(f"{path}.m.{j}", sub) for j, sub in enumerate(m.m)]


def _halves(t: Any, path: str, y: Desc) -> tuple[Desc, Desc]:
    """``chunk(2)``: two equal halves, which must lose the same number of channels."""
    if len(y) % 2 or not all(len(chan) == 1 for chan in y):
        raise Mismatch(f"{path}: a chunk in two of {len(y)} channels (odd, or sums)")
    h = len(y) // 2
    t.g.pairs.append(([chan[0] for chan in y[:h]], [chan[0] for chan in y[h:]], path))
    return y[:h], y[h:]


def _c2f(t: Any, path: str, m: Any, x: Any, inner: list[tuple[str, Any]], last: str = "cv2") -> Desc:
    """``C2f``/``C3k2`` (and ``ELAN1``, ``RepNCSPELAN4``): cv1's output is chunked in two equal halves;
    every inner block reads the previous output; the last conv reads them all concatenated."""
    a, b = _halves(t, path, t.apply(f"{path}.cv1", m.cv1, one(x)))
    t.g.halves[path] = f"{path}.cv1.bn"  # its .c is the half width
    ys = [a, b]
    for name, sub in inner:
        ys.append(t.apply(name, sub, ys[-1]))
    return one(t.apply(f"{path}.{last}", getattr(m, last), [chan for part in ys for chan in part]))


def _c3(t: Any, path: str, m: Any, x: Any) -> Desc:
    x = one(x)
    a = t.apply(f"{path}.m", m.m, t.apply(f"{path}.cv1", m.cv1, x))
    return one(t.apply(f"{path}.cv3", m.cv3, a + t.apply(f"{path}.cv2", m.cv2, x)))


def _sppf(t: Any, path: str, m: Any, x: Any) -> Desc:
    """cv1, then n max-pools of it (each a copy of the same channels), all concatenated into cv2;
    YOLO26's SPPF adds its input back (``shortcut``)."""
    x = one(x)
    y = t.apply(f"{path}.cv1", m.cv1, x)
    out = t.apply(f"{path}.cv2", m.cv2, y * (int(getattr(m, "n", 3)) + 1))
    return one(t.add(out, x) if getattr(m, "add", False) else out)


def _spp(t: Any, path: str, m: Any, x: Any) -> Desc:
    y = t.apply(f"{path}.cv1", m.cv1, one(x))
    return one(t.apply(f"{path}.cv2", m.cv2, y * (len(m.m) + 1)))


def _sppelan(t: Any, path: str, m: Any, x: Any) -> Desc:
    y = t.apply(f"{path}.cv1", m.cv1, one(x))
    return one(t.apply(f"{path}.cv5", m.cv5, y * 4))  # cv2..cv4 are max-pools of it


def _adown(t: Any, path: str, m: Any, x: Any) -> Desc:
    """A 2x2 average pool (no padding), the input chunked in two halves: cv1 reads the first, a
    max-pool then cv2 the second."""
    a, b = _halves(t, path, one(x))
    return one(t.apply(f"{path}.cv1", m.cv1, a) + t.apply(f"{path}.cv2", m.cv2, b))


def _split_for_attention(t: Any, path: str, m: Any, x: Any) -> tuple[Desc, Desc]:
    """``C2PSA``/``PSA``: cv1's output split in (c, c); the second half runs through attention, so its
    width is the heads'; the split sizes then fix the first half too."""
    y = t.apply(f"{path}.cv1", m.cv1, one(x))
    c = int(m.c)
    if len(y) != 2 * c:
        raise Mismatch(f"{path}.cv1 has {len(y)} channels, the split expects 2 x {c}")
    t.fix(y, f"split by {type(m).__name__} ({path}) into fixed halves, one of which feeds its attention")
    return y[:c], y[c:]


def _c2psa(t: Any, path: str, m: Any, x: Any) -> Desc:
    a, b = _split_for_attention(t, path, m, x)
    b = t.apply(f"{path}.m", m.m, b)
    return one(t.apply(f"{path}.cv2", m.cv2, a + b))


def _psa(t: Any, path: str, m: Any, x: Any) -> Desc:
    a, b = _split_for_attention(t, path, m, x)
    b = t.add(b, t.apply(f"{path}.attn", m.attn, b))
    b = t.add(b, t.apply(f"{path}.ffn", m.ffn, b))
    return one(t.apply(f"{path}.cv2", m.cv2, a + b))


def _psablock(t: Any, path: str, m: Any, x: Any) -> Desc:
    """x + attn(x), then x + ffn(x): the stream's width is the attention's; the hidden layer of the
    feed-forward part (ffn.0) is free."""
    x = one(x)
    t.fix(x, f"the stream of an attention block ({path}): its width is the heads'")
    a = t.apply(f"{path}.attn", m.attn, x)
    x = t.add(x, a) if m.add else a
    f = t.apply(f"{path}.ffn", m.ffn, x)
    return one(t.add(x, f) if m.add else f)


def _attention(t: Any, path: str, m: Any, x: Any) -> Desc:
    """qkv is reshaped into heads and v into the input's width: every channel inside is fixed;
    proj's output is not (what it is added to decides)."""
    x = one(x)
    why = f"inside the attention {path}: reshaped into its heads"
    t.fix(x, f"read by the attention {path}: its width is the heads'")
    qkv = t.apply(f"{path}.qkv", m.qkv, x)
    t.fix(qkv, why)
    dim = int(m.num_heads) * int(m.head_dim)
    if dim != len(x) or len(qkv) < dim:
        raise Mismatch(f"{path}: {m.num_heads} heads of {m.head_dim} for {len(x)} channels")
    t.fix(t.apply(f"{path}.pe", m.pe, qkv[:dim]), why)  # depthwise on v: the same fixed widths
    return one(t.apply(f"{path}.proj", m.proj, t.fresh(dim, why)))


def _proto(t: Any, path: str, m: Any, x: Desc) -> Desc:
    """cv1, a 2x transposed convolution (a removed input's constant would add a different value to
    each of the four output phases: not a bias, so cv1 stays whole), cv2, cv3 (the prototypes)."""
    up = m.upsample
    if not isinstance(up, nn.ConvTranspose2d):
        raise Mismatch(f"{path}.upsample is not a transposed convolution")
    y = t.apply(f"{path}.cv1", m.cv1, x)
    t.fix(y, f"read by a transposed convolution ({path}.upsample)")
    t.visit(f"{path}.upsample")
    y = t.apply(f"{path}.cv2", m.cv2, t.fresh(up.out_channels, f"the output of {path}.upsample"))
    y = t.apply(f"{path}.cv3", m.cv3, y)
    t.fix(y, f"the mask prototypes ({path}.cv3)")
    return one(y)


def _proto26(t: Any, path: str, m: Any, x: Any) -> Desc:
    """YOLO26: each coarser level refined to the finest's width, upsampled and added to it; the sum
    feeds the prototypes and (in training) a semantic head."""
    xs = many(x)
    feat = xs[0]
    for i, f in enumerate(m.feat_refine):
        feat = t.add(feat, t.apply(f"{path}.feat_refine.{i}", f, xs[i + 1]))
    if getattr(m, "semseg", None) is not None:
        t.apply(f"{path}.semseg", m.semseg, feat)
    return _proto(t, path, m, t.apply(f"{path}.feat_fuse", m.feat_fuse, feat))


def _detect(t: Any, path: str, m: Any, x: Any) -> Desc:
    """Detect and its task heads: per level i, every branch (box, class, mask coefficients, angle,
    keypoints; the one-to-one copies of end-to-end heads) reads x[i]; Segment's prototypes read
    x[0] (YOLO26: every level)."""
    xs = many(x)
    if len(xs) != m.nl:
        raise Mismatch(f"{path} reads {len(xs)} levels, expects {m.nl}")
    for aux in ("dfl", "flow_model"):  # fixed DFL weights / the pose loss's flow: read no features
        sub = getattr(m, aux, None)
        if isinstance(sub, nn.Module):
            t.visit(*(n for n, _ in sub.named_modules(prefix=f"{path}.{aux}")))
    for attr in ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3", "one2one_cv4"):
        branches = getattr(m, attr, None)
        if branches is None:
            continue
        if not isinstance(branches, nn.ModuleList) or len(branches) != m.nl:
            raise Mismatch(f"{path}.{attr} is not one branch per level")
        for i, branch in enumerate(branches):
            out = t.apply(f"{path}.{attr}.{i}", branch, xs[i])
            for extra in (f"{attr}_kpts", f"{attr}_sigma"):  # YOLO26 pose: two heads on cv4's output
                heads = getattr(m, extra, None)
                if heads is not None:
                    t.apply(f"{path}.{extra}.{i}", heads[i], out)
    proto = getattr(m, "proto", None)
    if proto is not None:
        t.apply(f"{path}.proto", proto, xs if type(proto).__name__ == "Proto26" else xs[0])
    return one(t.fresh(0, HEAD_OUT))


def _classify(t: Any, path: str, m: Any, x: Any) -> Desc:
    """conv, global average pooling (a constant channel pools to the constant), linear."""
    if isinstance(x, list) and x and isinstance(x[0], list):
        x = [chan for d in x for chan in d]  # a list of inputs is concatenated first
    y = t.apply(f"{path}.conv", m.conv, x)
    return one(t.linear(f"{path}.linear", m.linear, y))
