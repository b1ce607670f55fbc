"""Bad input gets one clear line naming the thing and the fix; one bad camera never stops the good ones."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from core.paths import REPO_ROOT


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_pipeline.py"), *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_unknown_key_and_wrong_type_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras:\n  - id: a\n    source: x.mp4\ntracker:\n  nmae: sort\n")
    proc = _cli("run", "--config", str(cfg), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "unknown key 'tracker.nmae'" in proc.stderr
    cfg.write_text("cameras:\n  - id: a\n    source: x.mp4\n    max_frames: lots\n")
    proc = _cli("run", "--config", str(cfg), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2 and "cameras.0.max_frames" in proc.stderr and "'lots'" in proc.stderr


def test_missing_weights_exit_1_with_one_line(shared, tmp_path):
    proc = _cli("run", "--source", f"a={shared}/data/pets09_s2l1/vtest.avi", "--weights", str(tmp_path / "y.pt"),
                "--output", str(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 1
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "detector weights not found" in lines[0] and "y.pt" in lines[0]


def test_bad_cameras_fail_alone_and_good_camera_is_stored(shared, yolo_weights, tmp_path):
    cut_avi = tmp_path / "truncated.avi"  # AVI keeps its index up front: the first ~2 % (a dozen frames) decode
    data = (shared / "data/pets09_s2l1/vtest.avi").read_bytes()
    cut_avi.write_bytes(data[: len(data) // 50])
    cut_mp4 = tmp_path / "truncated.mp4"  # this MP4 keeps its index (moov) at the end: nothing decodes
    data = (shared / "data/epfl_terrace1/terrace1-c1.mp4").read_bytes()
    cut_mp4.write_bytes(data[: len(data) // 2])
    port = _free_port()  # nothing listens here
    out = tmp_path / "out"
    proc = _cli(
        "run", "--output", str(out), "--no-progress", "--max-frames", "25",
        "--source", f"good={shared}/data/pets09_s2l1/vtest.avi",
        "--source", f"missing={tmp_path}/no_such_video.mp4",
        "--source", f"dead=rtsp://admin:hunter2@127.0.0.1:{port}/stream",
        "--source", f"cutavi={cut_avi}",
        "--source", f"cutmp4={cut_mp4}",
    )
    assert proc.returncode == 3, proc.stderr[-3000:]  # some cameras failed, others finished
    assert "hunter2" not in proc.stderr + proc.stdout  # credentials never printed
    assert "no_such_video.mp4" in proc.stderr and "not found" in proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr
    con = sqlite3.connect(out / "events.db")
    status = dict(con.execute("select camera_id, status from cameras"))
    assert status == {"good": "completed", "missing": "failed", "dead": "failed", "cutavi": "truncated",
                      "cutmp4": "failed"}
    frames = dict(con.execute("select camera_id, frames from cameras"))
    assert frames["good"] == 25 and 0 < frames["cutavi"] < 25
    assert "truncated.mp4" in proc.stderr
    assert con.execute("select count(*) from track_boxes where camera_id='good'").fetchone()[0] > 0
    assert (out / "mot" / "good.txt").stat().st_size > 0
    assert "hunter2" not in (con.execute("select config from runs").fetchone()[0])


# ----------------------------------------------------------------------------------------------------------------------
# The bad-input matrix: every kind of bad input a user can give the CLI, each run as a real subprocess. Each must end
# with exit 2 (bad arguments / config) or 1 (fatal), no traceback, and exactly one problem line on stderr that names
# the input. Log records at DEBUG/INFO/WARNING level (what was loading when it failed) are not problem lines.
# All cases run concurrently once per module (a thread pool of subprocesses) to keep the file fast.
# ----------------------------------------------------------------------------------------------------------------------

import os  # noqa: E402
import re  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

_LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
_HIDE_ONNXRUNTIME = (
    "import sys\n"
    "class _NoOnnxRuntime:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'onnxruntime' or name.startswith('onnxruntime.'):\n"
    "            raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name=name)\n"
    "sys.meta_path.insert(0, _NoOnnxRuntime())\n"
    "import runpy\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@dataclass
class Case:
    """args: CLI arguments; code: expected exit code; names: text the one problem line must contain."""

    args: list[str]
    code: int
    names: str
    hide_onnxruntime: bool = False
    also: list[str] = field(default_factory=list)  # more text the line must hold


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _matrix(base: Path, shared: Path) -> dict[str, Case]:
    video = str(shared / "data/pets09_s2l1/vtest.avi")
    out = str(base / "out")

    def cfg(name: str, text: str) -> str:
        path = base / f"{name}.yaml"
        path.write_text(text)
        return str(path)

    cam = f"cameras:\n  - id: a\n    source: {video}\n"
    evil_pth, evil_pt = base / "evil.pth", base / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Evil(base / "MARKER_reid")}, evil_pth)
    torch.save({"model": _Evil(base / "MARKER_yolo"), "train_args": {}}, evil_pt)
    (base / "junk.pth").write_text("not a checkpoint")
    (base / "junk.pt").write_text("not a checkpoint")
    (base / "junk.onnx").write_bytes(os.urandom(3000))
    ov = base / "broken_openvino_model"
    ov.mkdir()
    (ov / "model.xml").write_text("<html>no network here</html>")
    (ov / "model.bin").write_bytes(b"\0" * 64)
    (base / "a_file").write_text("x")
    (base / "empty_dir").mkdir()
    (base / "not_a_store.db").write_text("hello")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    run = ["run", "--output", out, "--no-progress", "--max-frames", "2"]
    src = ["--source", f"a={video}"]
    return {
        # config files, keys and values -> 2
        "config not YAML": Case(["run", "--config", cfg("syntax", "cameras: [\n  - id: a\n")], 2, "syntax.yaml",
                                also=["not valid YAML"]),
        "config tracker name": Case([*run, *src, "--tracker", "nosuch"], 2, "unknown tracker 'nosuch'"),
        "config tracker param": Case(["run", "--config", cfg("tp", cam + "tracker:\n  params:\n    max_agee: 3\n")],
                                     2, "max_agee"),
        "store URL": Case([*run, *src, "--store", "nonsense"], 2, "'nonsense'", also=["not a database URL"]),
        "max frames": Case(["run", "--output", out, *src, "--max-frames", "-3"], 2, "-3"),
        "duration 0": Case([*run, *src, "--duration", "0"], 2, "--duration"),
        # sources
        "source argument": Case([*run, "--source", "no_equals_sign"], 2, "no_equals_sign"),
        "source missing file": Case([*run, "--source", f"a={base / 'none.mp4'}"], 1, "none.mp4"),
        # detector weights -> 1
        "weights file type": Case([*run, *src, "--weights", str(base / "a_file")], 1, "a_file"),
        "weights junk .pt": Case([*run, *src, "--weights", str(base / "junk.pt")], 1, "junk.pt"),
        "weights malicious .pt": Case([*run, *src, "--weights", str(evil_pt)], 1, "evil.pt",
                                      also=["refused to load"]),
        "weights garbage OpenVINO": Case([*run, *src, "--weights", str(ov)], 1, "broken_openvino_model",
                                         also=["not an OpenVINO IR"]),
        "weights junk .onnx": Case([*run, *src, "--weights", str(base / "junk.onnx")], 1, "junk.onnx"),
        "weights .onnx without onnxruntime": Case([*run, *src, "--weights", str(base / "junk.onnx")], 1, "junk.onnx",
                                                  hide_onnxruntime=True, also=["pip install onnxruntime"]),
        # Re-ID checkpoints
        "reid checkpoint malicious": Case(["run", "--config", cfg("ck", cam + f"reid:\n  checkpoint: {evil_pth}\n"),
                                           "--output", out, "--no-progress", "--max-frames", "2"], 1, "evil.pth",
                                          also=["refused to load", "nothing was run"]),
        "reid checkpoint junk": Case(["evaluate", "reid", "--checkpoint", str(base / "junk.pth"), "--data",
                                      str(base / "empty_dir")], 2, "junk.pth"),
        "reid checkpoint missing": Case(["evaluate", "reid", "--checkpoint", str(base / "none.pth"), "--data",
                                         str(base / "empty_dir")], 2, "none.pth"),
        "reid checkpoint malicious (evaluate)": Case(["evaluate", "reid", "--checkpoint", str(evil_pth), "--data",
                                                      str(base / "empty_dir")], 2, "evil.pth",
                                                     also=["refused to load"]),
        # output paths
        "output is a file": Case(["run", "--output", str(base / "a_file"), *src, "--no-progress", "--max-frames", "2"],
                                 2, "a_file"),
        "output uncreatable": Case(["run", "--output", str(base / "a_file" / "sub"), *src, "--no-progress",
                                    "--max-frames", "2"], 2, "a_file"),
        # query arguments
        "query limit negative": Case(["query", "events", "--output", out, "--limit", "-5"], 2, "--limit -5"),
        "query limit not a number": Case(["query", "events", "--limit", "abc"], 2, "abc"),
        "query what": Case(["query", "nosuch"], 2, "nosuch"),
        "query since": Case(["query", "events", "--output", out, "--since", "yesterday"], 2, "yesterday"),
        "query run id": Case(["query", "events", "--output", out, "--run", "0"], 2, "--run 0"),
        "query no store in folder": Case(["query", "events", "--output", str(base / "empty_dir")], 2, "empty_dir"),
        # store URLs
        "store sqlite missing": Case(["query", "events", "--store", f"sqlite:///{base}/new/dir/x.db"], 2,
                                     "new/dir/x.db", also=["does not exist"]),
        "store not a database": Case(["query", "events", "--store", f"sqlite:///{base}/not_a_store.db"], 2,
                                     "not_a_store.db"),
        "store unreachable PostgreSQL": Case(["query", "events", "--store",
                                              f"postgresql+psycopg://nobody:hunter2@127.0.0.1:{dead_port}/x"], 2,
                                             f"127.0.0.1:{dead_port}"),
        "store URL unparseable": Case(["query", "events", "--store", "nonsense://"], 2, "nonsense"),
    }


def _run_case(case: Case) -> subprocess.CompletedProcess:
    script = str(REPO_ROOT / "run_pipeline.py")
    cmd = [sys.executable, "-c", _HIDE_ONNXRUNTIME, script] if case.hide_onnxruntime else [sys.executable, script]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*cmd, *case.args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, env=env)


@pytest.fixture(scope="module")
def matrix(shared, tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input")
    cases = _matrix(base, shared)
    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(_run_case, cases.values())))
    return base, cases, results


_NAMES = [
    "config not YAML",
    "config tracker name", "config tracker param",
    "store URL", "max frames", "duration 0", "source argument", "source missing file",
    "weights file type", "weights junk .pt", "weights malicious .pt", "weights garbage OpenVINO",
    "weights junk .onnx", "weights .onnx without onnxruntime", "reid checkpoint malicious", "reid checkpoint junk",
    "reid checkpoint missing", "reid checkpoint malicious (evaluate)", "output is a file", "output uncreatable",
    "query limit negative", "query limit not a number", "query what", "query since", "query run id",
    "query no store in folder", "store sqlite missing", "store not a database", "store unreachable PostgreSQL",
    "store URL unparseable",
]
@pytest.mark.parametrize("name", _NAMES)
def test_bad_input_matrix(matrix, name):
    base, cases, results = matrix
    case, proc = cases[name], results[name]
    problems = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _LOG_RECORD.match(ln)]
    report = f"exit {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, report
    assert proc.returncode == case.code, report
    assert len(problems) == 1, report
    assert case.names in problems[0], report
    for text in case.also:
        assert text in problems[0], report
    assert "hunter2" not in proc.stderr + proc.stdout
    assert not list(base.glob("MARKER*")), "a malicious checkpoint ran code"
    assert not (base / "new").exists(), "a query created a folder"


def test_matrix_lists_every_case(matrix):
    assert set(_NAMES) == set(matrix[1])
