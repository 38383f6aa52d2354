"""Every budget yolobn enforces on its inputs, in one place (listed in docs/safety.md).

A small file must not cost gigabytes or hang: each input is measured against these numbers *before*
anything is allocated for it (a yaml's expanded size before it is built into Python objects, a
model's parameter count before its weights exist, an image's pixels before it is decoded). Over a
budget, the input gets one line (exit 2), or an image is skipped with a warning. Each number leaves
room of at least several times what a real Ultralytics input needs. This module imports nothing.
"""

from __future__ import annotations

__all__ = [
    "MAX_BATCH",
    "MAX_BUILD_ACTIVATIONS",
    "MAX_CLASSES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMGSZ",
    "MAX_INFLATE_RATIO",
    "MAX_LAYER_ROWS",
    "MAX_LIST_BYTES",
    "MAX_MODEL_PARAMS",
    "MAX_MULTIPLIER",
    "MAX_NAME_CHARS",
    "MAX_REPEATS",
    "MAX_SEEDS",
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "MIN_IMGSZ",
    "MIN_INFLATE_BYTES",
]

# --- yaml files (dataset yamls, experiment files, model yamls) ------------------------------------
# The largest real ones are a few tens of KB (ImageNet-21k's 21,843 class names are ~0.5 MB).
MAX_YAML_BYTES = 2 << 20
# Nodes (scalars, lists, mappings) after expanding aliases: an alias bomb of a few hundred bytes
# expands to 10^9 nodes; 200,000 is ten times ImageNet-21k's names and parses in about a second.
MAX_YAML_NODES = 200_000
# Nesting depth of lists and mappings: model yamls nest 4 deep (section, row, args, a list arg).
MAX_YAML_DEPTH = 32

# A dataset's ``val:`` that is a file lists image paths, one a line: COCO's train list (118k images)
# is 5 MB; Ultralytics reads the whole list.
MAX_LIST_BYTES = 64 << 20

# --- class names (checkpoints, dataset yamls, model yamls' nc) ------------------------------------
# ImageNet-21k classifiers have 21,843 classes, LVIS 1,203; Ultralytics builds a name per class.
MAX_CLASSES = 100_000
# Total characters of all class names: 1,000 characters for each of MAX_CLASSES classes would be
# 100 MB; real names average under 30 characters.
MAX_NAME_CHARS = 10_000_000

# --- models built from a yaml ---------------------------------------------------------------------
# depth_multiple / width_multiple (and a scale's two multipliers): Ultralytics' largest are 1.33
# and 1.5 (YOLOv5x6, YOLO11x).
MAX_MULTIPLIER = 16.0
# Repeats of one layer row after the depth multiplier (YOLOv9e has 4, YOLOv5x6 scales 3 by 1.33).
MAX_REPEATS = 64
# Layer rows (backbone + head): YOLOv9e has 42.
MAX_LAYER_ROWS = 512
# Parameters and buffers, counted by building the model on torch's 'meta' device (no storage)
# before the real build: the largest shipped yaml (YOLOv6x) has 173M, YOLO11x 57M. 500M is 2 GB
# of float32 weights.
MAX_MODEL_PARAMS = 500_000_000
# Elements of all layer outputs for the 256x256 image Ultralytics' model constructor runs once (to
# find the strides), measured on 'meta': the largest shipped model (YOLO26x-P2) has 17M; 2^27 is
# 512 MB of float32 (an upsampling layer with a huge factor gets here).
MAX_BUILD_ACTIVATIONS = 1 << 27

# --- checkpoints ----------------------------------------------------------------------------------
# torch.save stores zip records uncompressed; a record compressed by another tool can declare (and
# inflate to) 1000 times its size. The records together may declare at most this multiple of the
# file size, plus MIN_INFLATE_BYTES for tiny files (weights compress to no less than about half).
MAX_INFLATE_RATIO = 4
MIN_INFLATE_BYTES = 16 << 20

# --- images ---------------------------------------------------------------------------------------
# Bytes on disk: Ultralytics' imread reads the whole file into memory before decoding it (a sparse
# 10 GB file named .jpg reads as 10 GB). 100 MP of uncompressed 8-bit RGB is 300 MB.
MAX_IMAGE_BYTES = 256 << 20
# Pixels of one frame, read from the header before decoding: 100 MP (e.g. 10000x10000) is 300 MB
# decoded as 8-bit BGR, before letterboxing; a 1 MB PNG can declare 32000x32000 (3 GB).
MAX_IMAGE_PIXELS = 100_000_000

# --- numeric options (command line and experiment files) ------------------------------------------
# The inference size, wherever it is given (--imgsz, an experiment, an impl option, a checkpoint):
# 16 images of 4096 px are 3 GB of float32 input already.
MIN_IMGSZ, MAX_IMGSZ = 32, 4096
# Images per forward pass or validation batch: more than any accelerator holds at 640 px.
MAX_BATCH = 1024
# Random rankings of `yolobn frontier`: each is a full validation per share; 100 is days of work.
MAX_SEEDS = 100
