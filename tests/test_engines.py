"""Engine selection and the camera actor's body, without Ray (`pipeline/engines/`)."""

from __future__ import annotations

import subprocess
import sys

from core.paths import REPO_ROOT
from pipeline.config import parse_config
from pipeline.engines.camera_worker import CameraWorker
from pipeline.engines.messages import CameraDone, CameraFrame


def test_local_engine_never_imports_ray():
    code = ("import sys, argparse; from pipeline.commands.run import build_config; "
            "from pipeline.engines import build_engine; "
            "a = argparse.Namespace(config='configs/epfl_terrace.yaml', source=[], output='/tmp/x', weights=None, "
            "device=None, tracker=None, max_frames=None, duration=None, overwrite=False, store=None, "
            "no_progress=True, engine=None, ray_address=None); cfg = build_config(a); e = build_engine(cfg); "
            "b = argparse.Namespace(**{**vars(a), 'ray_address': 'auto'}); rc = build_config(b).run; "
            "print(type(e).__name__, cfg.run.engine, 'ray' in sys.modules, rc.engine, rc.ray_address)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["Pipeline", "local", "False", "ray", "auto"], out.stderr[-2000:]


def test_camera_worker_in_process(shared, yolo_weights):
    """The camera actor's body, run in this process: frames in order, tracks and Re-ID clips, then its end."""
    cfg = parse_config({"cameras": [{"id": "view001", "source": str(shared / "data/pets09_s2l1/vtest.avi"),
                                     "fps": 7, "max_frames": 25}], "run": {"progress": False}})
    worker = CameraWorker(cfg, "view001", send_images=False, reid_input_size=(256, 128), id_offset=1000)
    info = worker.open()
    assert info.error is None and info.size == (768, 576) and not info.is_live
    worker.start()
    messages = []
    while not messages or not isinstance(messages[-1], CameraDone):
        batch = worker.take(8, timeout=60)
        assert batch, "no message within 60 s"
        messages.extend(batch)
    worker.finish()
    frames, done = messages[:-1], messages[-1]
    assert all(isinstance(m, CameraFrame) for m in frames)
    assert [m.index for m in frames] == list(range(25)) and done.frames == 25 and done.status == "completed"
    assert all(m.image is None and m.size == (768, 576) for m in frames)
    ids = {int(t) for m in frames for t in m.tracks.track_ids}
    assert ids and min(ids) > 1000  # tracks found, numbered after the offset
    clips = [c for m in frames for c in m.clips] + done.clips
    assert clips and all(c.crops.shape[1:] == (256, 128, 3) and c.track_id > 1000 for c in clips)
