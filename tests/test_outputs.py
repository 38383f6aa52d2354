"""One output guard (issue 18 §1 and §5): no output replaces an input, whatever its spelling (a
relative or dotted path, ``~``, a symbolic link, a hard link, a linked folder, a file inside an
output folder); an existing character device or FIFO is written into and never replaced; a socket
is refused; a full disk is exit 2 with one line and nothing left behind. Every command that writes,
and the Python API. Each test compares the whole working folder (bytes, inodes, node types) before
and after the run."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import yolobn
from tests.corpus import tiny_png
from tests.run_main import run_main
from yolobn.core.atomic import write_files
from yolobn.core.errors import YolobnError
from yolobn.core.outputs import classify, guard_outputs

# --------------------------------------------------------------------------------------------------
# nodes and the folder's state


def char_device(path: Path, minor: int = 3) -> Path:
    """A twin of /dev/null (minor 3) or /dev/full (minor 7) in the test folder: never the real /dev."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except OSError as e:
        pytest.skip(f"cannot make a device node here ({e.strerror})")
    return path


def unix_socket(path: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
    finally:
        s.close()  # the socket file stays
    return path


@contextlib.contextmanager
def fifo_reader(path: Path) -> Iterator[dict[str, bytes]]:
    """A FIFO at ``path`` with a reader thread; ``box["data"]`` holds what was written into it."""
    os.mkfifo(path)
    box: dict[str, bytes] = {}

    def read() -> None:
        with open(path, "rb") as f:
            box["data"] = f.read()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        yield box
    finally:
        if "data" not in box:  # nothing opened it: let the reader see an end of file
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(timeout=30)


def kind(path: Path) -> str:
    mode = os.lstat(path).st_mode
    for test, name in (
        (stat.S_ISLNK, "link"),
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "other"


def state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: its node type, inode, and content (file sha256, link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            k = kind(p)
            content = (
                hashlib.sha256(p.read_bytes()).hexdigest()
                if k == "file"
                else os.readlink(p)
                if k == "link"
                else ""
            )
            out[str(p.relative_to(root))] = (k, os.lstat(p).st_ino, content)
    return out


def one_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("yolobn: error: "), err
    return lines[0]


@pytest.fixture
def ws(tmp_path, monkeypatch, demo_path) -> Path:
    """The working folder: m.pt (the input) and b.pt (a second checkpoint), a symbolic and a hard
    link to m.pt, a link to the folder itself, an image, a dataset yaml; HOME is the folder (``~``)."""
    monkeypatch.chdir(tmp_path)
    cache = os.environ.get("YOLOBN_CACHE") or str(Path.home() / ".cache" / "yolobn")
    monkeypatch.setenv("YOLOBN_CACHE", cache)  # the shapes dataset stays where it was generated
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(demo_path, tmp_path / "m.pt")
    shutil.copy(demo_path, tmp_path / "b.pt")
    os.symlink("m.pt", tmp_path / "link.pt")
    os.link(tmp_path / "m.pt", tmp_path / "hard.pt")
    os.symlink(tmp_path, tmp_path / "here")
    (tmp_path / "sub").mkdir()
    tiny_png(tmp_path / "img.png")
    (tmp_path / "d.yaml").write_text("path: .\ntrain: images\nval: images\nnames: [a]\n")
    (tmp_path / "e.yaml").write_text(f"model: {tmp_path / 'm.pt'}\ndata: shapes\nvariants: [reference]\n")
    (tmp_path / "run" / "yolobn").mkdir(parents=True)
    (tmp_path / "run" / "yolobn" / "epochs.csv").write_text("epoch,name\n1,model.0.bn\n")
    return tmp_path


# --------------------------------------------------------------------------------------------------
# §1: an output file never replaces an input, whatever the spelling

M = "{ws}/m.pt"  # the input, named by its absolute path; the outputs below name it otherwise
FILE_OUTPUTS = {
    "inspect --csv": ["inspect", M, "--csv", "{out}"],
    "inspect --channels-csv": ["inspect", M, "--channels-csv", "{out}"],
    "inspect --json": ["inspect", M, "--json", "{out}"],
    "activations --csv": ["activations", M, "--images", "img.png", "--csv", "{out}"],
    "activations --channels-csv": ["activations", M, "--images", "img.png", "--channels-csv", "{out}"],
    "activations --json": ["activations", M, "--images", "img.png", "--json", "{out}"],
    "compare --csv": ["compare", "b.pt", M, "--csv", "{out}"],
    "compare --channels-csv": ["compare", "b.pt", M, "--channels-csv", "{out}"],
    "compare --json": ["compare", "b.pt", M, "--json", "{out}"],
    "compare --html": ["compare", "b.pt", M, "--html", "{out}"],
    "recalibrate -o": ["recalibrate", M, "-o", "{out}", "--force", "--images", "img.png"],
    "prune -o": ["prune", M, "-o", "{out}", "--force", "--share", "5", "--images", "img.png"],
}
SPELLINGS = {
    "relative": "m.pt",
    "dotted": "sub/../m.pt",
    "absolute": "{ws}/m.pt",
    "home": "~/m.pt",
    "symlink": "link.pt",
    "hardlink": "hard.pt",
    "linked_folder": "here/m.pt",
}


def fill(argv: list[str], **kw: str) -> list[str]:
    return [a.format(**kw) for a in argv]


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_an_output_file_never_replaces_the_input(command, spelling, ws, capsys):
    before = state(ws)
    out = SPELLINGS[spelling].format(ws=ws)
    code, stdout, err = run_main(fill(FILE_OUTPUTS[command], ws=str(ws), out=out), capsys)
    assert code == 2 and stdout == ""
    line = one_error(err)
    assert f" {out}: is " in line and "input" in line and "write the output to another file" in line
    assert state(ws) == before  # the input's bytes, its links and their node types; nothing new


@pytest.mark.parametrize(
    "argv, what",
    [
        (["inspect", "m.pt", "--images", "img.png", "--json", "./img.png"], "an input image"),
        (["activations", "m.pt", "--images", "img.png", "--csv", "here/img.png"], "an input image"),
        (["recalibrate", "m.pt", "--data", "d.yaml", "-o", "sub/../d.yaml", "--force"], "the dataset yaml"),
        (["compare", "m.pt", "b.pt", "--json", "b.pt"], "an input model"),  # issue 18's own example
        (["compare", "m.pt", "b.pt", "--csv", "m.pt"], "an input model"),
        (["inspect", "--json", str(yolobn.demo_model_path())], "the input checkpoint"),
    ],
    ids=["image", "image_linked_folder", "dataset_yaml", "compare_json_b", "compare_csv_a", "the_demo"],
)
def test_other_inputs_are_never_replaced(argv, what, ws, capsys):
    demo = yolobn.demo_model_path()
    demo_before = hashlib.sha256(demo.read_bytes()).hexdigest()
    before = state(ws)
    code, _, err = run_main(argv, capsys)
    assert code == 2 and f"is {what}; write the output to another file" in one_error(err)
    assert state(ws) == before
    assert hashlib.sha256(demo.read_bytes()).hexdigest() == demo_before


def test_two_outputs_on_one_file_are_refused(ws, capsys):
    (ws / "x.txt").write_text("an earlier output")
    os.link(ws / "x.txt", ws / "sub" / "x2")  # two names, one inode
    before = state(ws)
    code, _, err = run_main(["compare", "m.pt", "b.pt", "--csv", "x.txt", "--html", "sub/x2"], capsys)
    assert code == 2 and one_error(err).endswith(
        "--html sub/x2: same file as --csv x.txt; give each output its own file"
    )
    code, _, err = run_main(["inspect", "m.pt", "--csv", "y.csv", "--json", "here/y.csv"], capsys)
    assert code == 2 and "--json here/y.csv: same file as --csv y.csv" in one_error(err)
    assert state(ws) == before


# --------------------------------------------------------------------------------------------------
# §1: an output folder never replaces an input that is in it

FOLDER_OUTPUTS = {  # command -> (a file it writes into the folder, argv, the input)
    "report": ("summary.json", ["report", M, "-o", "{out}"], "m.pt"),
    "swap": ("swap.csv", ["swap", M, "--impl", "reference", "--data", "shapes", "-o", "{out}"], "m.pt"),
    "frontier": ("points.csv", ["frontier", M, "--data", "shapes", "-o", "{out}"], "m.pt"),
    "experiment": ("results.json", ["experiment", "e.yaml", "-o", "{out}"], "m.pt"),
    "experiment_file": ("experiment.html", ["experiment", "e.yaml", "-o", "{out}"], "e.yaml"),
    "report_run": ("training.html", ["report", "--run", "run", "-o", "{out}"], "run/yolobn/epochs.csv"),
}
FOLDER_SPELLINGS = ("symlink", "hardlink", "dotted", "linked_folder")


@pytest.mark.parametrize("spelling", FOLDER_SPELLINGS)
@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_an_output_folder_never_replaces_an_input_in_it(command, spelling, ws, capsys):
    name, argv, src = FOLDER_OUTPUTS[command]
    (ws / "out").mkdir()
    if spelling == "symlink":
        os.symlink(ws / src, ws / "out" / name)
    else:
        os.link(ws / src, ws / "out" / name)
    os.symlink("out", ws / "outlink")
    out = {"symlink": "out", "hardlink": "out", "dotted": "sub/../out", "linked_folder": "outlink"}[spelling]
    before = state(ws)
    code, _, err = run_main(fill(argv, ws=str(ws), out=out), capsys)
    assert code == 2
    line = one_error(err)
    assert f"--out {out}: {name}: is " in line and "write the output to another file" in line
    assert state(ws) == before


def test_an_input_named_like_an_output_in_the_folder(ws, capsys):
    """The input itself sits in the output folder under a name the command writes."""
    (ws / "out").mkdir()
    shutil.copy(ws / "m.pt", ws / "out" / "summary.json")
    shutil.copy(ws / "e.yaml", ws / "out" / "results.json")  # JSON is YAML: a valid experiment file
    before = state(ws)
    for argv, name in (
        (["report", "out/summary.json", "-o", "out"], "summary.json"),
        (["experiment", "out/results.json", "-o", "./out"], "results.json"),
    ):
        code, _, err = run_main(argv, capsys)
        assert code == 2 and f": {name}: is the " in one_error(err)
    assert state(ws) == before


def test_the_api_writers_never_replace_an_input(ws, demo_model_loaded):
    (ws / "out").mkdir()
    os.symlink(ws / "m.pt", ws / "out" / "layers.csv")
    before = state(ws)
    with pytest.raises(YolobnError, match="layers.csv: is the input model"):
        yolobn.write_report("m.pt", ws / "out")
    ins = yolobn.inspect(ws / "here" / "m.pt")
    with pytest.raises(YolobnError, match="layers.csv: is the input model"):
        yolobn.write_report(ins, "sub/../out")
    loaded = yolobn.load("m.pt")
    for spelling in ("hard.pt", "link.pt", "~/m.pt", "here/m.pt"):
        with pytest.raises(YolobnError, match="is the input checkpoint"):
            yolobn.save_checkpoint(loaded, spelling)
    with pytest.raises(YolobnError, match="is an input file"):
        yolobn.save_checkpoint(demo_model_loaded, "hard.pt", protect=["m.pt"])
    # the last line of defence: write_files itself, given the inputs
    with pytest.raises(YolobnError, match="hard.pt: is the model; write the output to another file"):
        write_files({Path("x.csv"): "1\n", Path("hard.pt"): "2\n"}, {Path("m.pt"): "the model"})
    assert state(ws) == before


# --------------------------------------------------------------------------------------------------
# §1: devices, FIFOs and sockets are never replaced


def _outputs_into(ws: Path, make: str) -> dict[str, list[str]]:
    """Every command's outputs as special nodes of one kind (made here), argv per command."""
    nodes = {"null": lambda p: char_device(p), "socket": unix_socket}[make]
    for d in ("o_report", "o_swap", "o_exp", "o_frontier"):
        (ws / d).mkdir()
    names = {
        "o_report": ("report.html", "layers.csv", "channels.csv", "summary.json"),
        "o_swap": ("swap.csv", "swap.json", "swap.html"),
        "o_exp": ("results.csv", "results.json", "experiment.html", "sensitivity.csv"),
        "o_frontier": ("frontier.csv", "points.csv", "frontier.json", "frontier.html"),
    }
    for d, files in names.items():
        for n in files:
            nodes(ws / d / n)
    for n in ("i.csv", "i.ch", "i.json", "a.json", "c.csv", "c.ch", "c.json", "c.html", "r.pt"):
        nodes(ws / n)
    return {
        "inspect": ["inspect", "m.pt", "--csv", "i.csv", "--channels-csv", "i.ch", "--json", "i.json", "-q"],
        "activations": ["activations", "m.pt", "--images", "img.png", "--json", "a.json", "-q"],
        "compare": [
            "compare",
            "m.pt",
            "b.pt",
            "--csv",
            "c.csv",
            "--channels-csv",
            "c.ch",
            "--json",
            "c.json",
            "--html",
            "c.html",
            "-q",
        ],
        "report": ["report", "m.pt", "-o", "o_report", "-q"],
        "recalibrate": ["recalibrate", "m.pt", "--images", "img.png", "-o", "r.pt", "-q"],
        "swap": ["swap", "m.pt", "--impl", "reference", "--data", "shapes", "-o", "o_swap", "-q"],
        "experiment": ["experiment", "e.yaml", "-o", "o_exp", "-q"],
        "frontier": ["frontier", "m.pt", "--data", "shapes", "--images", "img.png", "-o", "o_frontier", "-q"],
    }


@pytest.mark.parametrize(
    "command",
    ["inspect", "activations", "compare", "report", "recalibrate", "swap", "experiment", "frontier"],
)
def test_a_socket_output_is_refused(command, ws, capsys):
    argv = _outputs_into(ws, "socket")[command]
    before = state(ws)
    code, _, err = run_main(argv, capsys)
    assert code == 2 and "is a socket, not a regular file" in one_error(err)
    assert state(ws) == before


@pytest.fixture
def fake_sweeps(monkeypatch):
    """swap, experiment and frontier without their validations (their tables are tests/test_pages.py's
    planted ones): what is under test is where their files go."""
    from tests.test_pages import experiment_result, frontier_result, variants_result

    monkeypatch.setattr("yolobn.sweeps.variants.run_variants", lambda *a, **k: variants_result())
    monkeypatch.setattr("yolobn.sweeps.experiment.run_experiment", lambda *a, **k: experiment_result())
    monkeypatch.setattr("yolobn.sweeps.frontier.frontier", lambda *a, **k: frontier_result())


@pytest.mark.slow
def test_a_character_device_is_written_into_never_replaced(ws, capsys, fake_sweeps):
    """Every command, every output a /dev/null twin: exit 0, and every node is still that device."""
    commands = _outputs_into(ws, "null")
    before = state(ws)
    for command, argv in commands.items():
        code, _, err = run_main(argv, capsys)
        assert code == 0, (command, err)
    assert state(ws) == before  # no regular file in place of a device, no temporary file beside one


@pytest.mark.slow
def test_a_full_device_is_exit_2_and_the_other_files_are_not_written(ws, capsys):
    char_device(ws / "full", 7)  # a /dev/full twin: every write fails with ENOSPC
    before = state(ws)
    code, out, err = run_main(["inspect", "m.pt", "--csv", "x.csv", "--json", "full"], capsys)
    assert code == 2 and out == ""
    assert (
        one_error(err) == "yolobn: error: full: cannot write (No space left on device); nothing was written"
    )
    code, _, err = run_main(["recalibrate", "m.pt", "--images", "img.png", "-o", "full"], capsys)
    assert code == 2 and "full: cannot write (No space left on device)" in one_error(err)
    assert state(ws) == before


@pytest.mark.slow
def test_a_fifo_is_written_into(ws, capsys):
    with fifo_reader(ws / "j.fifo") as box:
        code, _, err = run_main(["inspect", "m.pt", "--json", "j.fifo", "--csv", "x.csv", "-q"], capsys)
    assert code == 0, err
    assert json.loads(box["data"])["summary"]["bn_layers"] == 81 and (ws / "x.csv").is_file()
    with fifo_reader(ws / "r.fifo") as box:  # a checkpoint (a callable writer) through a pipe
        code, _, err = run_main(["recalibrate", "m.pt", "--images", "img.png", "-o", "r.fifo", "-q"], capsys)
    assert code == 0, err
    (ws / "got.pt").write_bytes(box["data"])
    assert yolobn.load(ws / "got.pt").meta.recalibration["images"] == 1
    assert kind(ws / "j.fifo") == kind(ws / "r.fifo") == "fifo"


def test_write_files_never_replaces_a_special_file(tmp_path):
    null, fifo = char_device(tmp_path / "null"), tmp_path / "p"
    sock = unix_socket(tmp_path / "s")
    with fifo_reader(fifo) as box:
        assert write_files({tmp_path / "a.txt": "a", null: "to null", fifo: b"to the pipe"}) == [
            tmp_path / "a.txt",
            null,
            fifo,
        ]
    assert box["data"] == b"to the pipe" and (tmp_path / "a.txt").read_text() == "a"
    with pytest.raises(YolobnError, match="is a socket, not a regular file"):
        write_files({sock: "x"})
    assert (
        classify(null, "x").stream
        and classify(fifo, "x").stream
        and not classify(tmp_path / "a.txt", "x").stream
    )
    assert sorted((p.name, kind(p)) for p in tmp_path.iterdir()) == [
        ("a.txt", "file"),
        ("null", "char"),
        ("p", "fifo"),
        ("s", "socket"),
    ]


def test_a_symbolic_link_is_written_through(tmp_path):
    """A link to a file that is not an input: the file it points to is replaced, the link stays."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.json").write_text("old")
    os.symlink("real/a.json", tmp_path / "a.json")
    os.symlink("real/new.json", tmp_path / "dangling.json")
    write_files({tmp_path / "a.json": "new", tmp_path / "dangling.json": "made"})
    assert kind(tmp_path / "a.json") == kind(tmp_path / "dangling.json") == "link"
    assert (tmp_path / "real" / "a.json").read_text() == "new"
    assert (tmp_path / "real" / "new.json").read_text() == "made"
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["a.json", "new.json"]  # no temp file
    with pytest.raises(YolobnError, match="is the input"):  # a link to an input: refused
        guard_outputs({"--json a.json": tmp_path / "a.json"}, {tmp_path / "real" / "a.json": "the input"})


# --------------------------------------------------------------------------------------------------
# §5: a full disk is exit 2, one line, nothing left behind


def test_a_disk_error_inside_a_callable_writer_leaves_nothing(tmp_path, monkeypatch, demo_model_loaded):
    """torch.save writing into the file object it is given: its OSError (here ENOSPC, halfway) is a
    YolobnError like any other write error, and neither the file nor its temporary sibling stays."""

    def full(obj, f):
        f.write(b"PK" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        YolobnError, match=r"r\.pt: cannot write \(No space left on device\); nothing was written"
    ):
        yolobn.save_checkpoint(demo_model_loaded, tmp_path / "r.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_exit_2_with_one_line(small_disk, ws, capsys):
    code, _, err = run_main(
        ["inspect", "m.pt", "--json", f"{small_disk}/a.json", "--channels-csv", f"{small_disk}/ch.csv"],
        capsys,
    )
    assert code == 2 and "cannot write (No space left on device); nothing was written" in one_error(err)
    assert list(small_disk.iterdir()) == []
    code, _, err = run_main(
        ["recalibrate", "m.pt", "--images", "img.png", "-o", f"{small_disk}/r.pt"], capsys
    )
    assert code == 2 and "r.pt: cannot write (No space left on device)" in one_error(err)
    assert list(small_disk.iterdir()) == []
