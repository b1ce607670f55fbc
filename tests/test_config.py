"""Config validation: typed defaults, readable one-line errors naming key, value and expectation."""

from pathlib import Path

import pytest

from pipeline.config import ConfigError, config_from_sources, load_config, parse_config, parse_source_arg
from core.paths import REPO_ROOT, shared_dir


def test_shipped_configs_validate():
    terrace = load_config(REPO_ROOT / "configs" / "epfl_terrace.yaml")
    assert [c.id for c in terrace.cameras] == ["c0", "c1"]
    assert terrace.cameras[0].source == str(shared_dir() / "data/epfl_terrace1/terrace1-c0.mp4")
    pets = load_config(REPO_ROOT / "configs" / "pets09.yaml")
    assert pets.cameras[0].id == "view001" and pets.cameras[0].fps == 7
    assert pets.detector.weights.endswith("models/yolo11n_int8_openvino_model")
    assert "${SHARED}" not in pets.detector.weights


def test_defaults_fill_everything_optional():
    cfg = parse_config({"cameras": [{"id": "a", "source": "x.mp4"}]})
    assert cfg.detector.device == "auto" and cfg.detector.classes == [0]
    assert cfg.tracker.name == "mcsa" and cfg.store.url is None and cfg.output.mot is True


def test_unknown_key_is_named(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("cameras:\n  - id: a\n    source: x.mp4\n    fsp: 7\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "unknown key 'cameras.0.fsp'" in str(err.value) and str(path) in str(err.value)


def test_wrong_type_names_key_value_and_expectation(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("cameras:\n  - id: a\n    source: x.mp4\ndetector:\n  conf: high\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "detector.conf" in msg and "'high'" in msg and "number" in msg


def test_out_of_range_and_duplicate_ids():
    with pytest.raises(ConfigError, match="detector.conf"):
        parse_config({"cameras": [{"id": "a", "source": "x"}], "detector": {"conf": 2}})
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"cameras": [{"id": "a", "source": "x"}, {"id": "a", "source": "y"}]})


def test_malformed_yaml_and_missing_file(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("cameras: [\n  - id: a\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="missing required key 'cameras'"):
        parse_config({"detector": {}})


def test_source_arguments():
    cam = parse_source_arg("door=rtsp://u:p@10.0.0.1/s")
    assert cam.id == "door" and cam.source == "rtsp://u:p@10.0.0.1/s"
    assert parse_source_arg("desk=0").source == 0
    cfg = config_from_sources(["a=1.mp4", "b=2.mp4"])
    assert [c.id for c in cfg.cameras] == ["a", "b"]
    with pytest.raises(ConfigError, match="CAM_ID=URI"):
        parse_source_arg("video.mp4")
    with pytest.raises(ConfigError, match="--source bad id"):
        parse_source_arg("bad id=x.mp4")


def test_tracker_and_store_url_checked_when_read():
    cams = {"cameras": [{"id": "a", "source": "x.mp4"}]}
    with pytest.raises(ConfigError, match="unknown tracker 'nosuch'; known: mcsa, sort"):
        parse_config({**cams, "tracker": {"name": "nosuch"}})
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) max_agee for tracker 'mcsa'; valid: .*max_age"):
        parse_config({**cams, "tracker": {"params": {"max_agee": 3}}})
    assert parse_config({**cams, "tracker": {"name": "sort", "params": {"max_age": 3}}}).tracker.params == {"max_age": 3}
    with pytest.raises(ConfigError) as err:
        parse_config({**cams, "store": {"url": "postgresql://u:hunter2@h:notaport/d"}})
    assert "store.url" in str(err.value) and "not a database URL" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert parse_config({**cams, "store": {"url": "sqlite:///x/events.db"}}).store.url == "sqlite:///x/events.db"


def test_direct_setting_reads_yaml_on_off():
    """`detector.direct: on` unquoted is a YAML boolean: it must mean "on", not fail; other values are refused."""
    import yaml

    from pipeline.config import DetectorConfig

    for text, want in (("on", "on"), ("off", "off"), ("auto", "auto"), ("'on'", "on"), ("yes", "on")):
        assert DetectorConfig(**yaml.safe_load(f"direct: {text}")).direct == want
    with pytest.raises(ValueError):
        DetectorConfig(direct="maybe")


def test_output_video_off_unquoted():
    """`output.video: off` unquoted is YAML's False: it means "off" (it used to be refused as a bad value)."""
    import yaml

    from pipeline.config import OutputConfig

    assert OutputConfig(**yaml.safe_load("video: off")).video == "off"
    with pytest.raises(ValueError):
        OutputConfig(**yaml.safe_load("video: on"))  # on is ambiguous (per_camera or mosaic): still an error
