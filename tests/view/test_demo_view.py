"""``affseg demo --view``: after the demo, the viewer serves raw, ground truth, predicted affinities
and the best segmentation until Ctrl-C."""
from __future__ import annotations

import _thread
import signal
import threading
import time
import urllib.request

import pytest

pytest.importorskip("torch", reason="the demo trains a network: it needs the 'train' extra")
pytest.importorskip("yaml", reason="the demo's config is YAML: it needs the 'train' extra")
pytest.importorskip("neuroglancer", reason="--view needs the view extra (neuroglancer)")

from neuroglancer import server as ng_server

from affseg.cli import main

ARGS = ["--shape", "12", "64", "64", "--train-shape", "16", "80", "80", "--iterations", "2"]


@pytest.mark.slow
def test_demo_view_serves_the_demo_volumes_until_ctrl_c(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seen = {}

    def look_then_interrupt():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            running = ng_server.global_server
            viewers = list(running.viewers.values()) if running is not None else []
            if viewers:
                state = viewers[0].state
                seen["layers"] = {layer.name: (layer.type, layer.visible) for layer in state.layers}
                with urllib.request.urlopen(viewers[0].get_viewer_url(), timeout=30) as page:
                    seen["page"] = page.status
                break
            time.sleep(0.2)
        _thread.interrupt_main(signal.SIGINT)  # Ctrl-C

    watcher = threading.Thread(target=look_then_interrupt, daemon=True)
    watcher.start()
    assert main(["demo", "--output", "d", *ARGS, "--view"]) == 130
    watcher.join()
    out, err = capsys.readouterr()
    assert "neuroglancer: http://127.0.0.1:" in out
    assert "layers: raw (image), affs (affinities), labels (segmentation), segmentation (segmentation)" in out
    assert err.strip().splitlines()[-1] == "interrupted; the viewer stopped"
    assert seen["page"] == 200
    # the best segmentation on top; ground truth and affinities a click away
    assert seen["layers"] == {"raw": ("image", True), "affs": ("image", False),
                              "labels": ("segmentation", False), "segmentation": ("segmentation", True)}
    assert (tmp_path / "d" / "scores.json").is_file()  # the demo's outputs stay
    assert ng_server.global_server is None  # the server stopped


def test_demo_view_refuses_a_bad_port_before_the_demo_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--output", "d", *ARGS, "--view", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["demo", "--output", "d", *ARGS, "--port", "8000"]) == 2
    assert "--bind and --port are for --view" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
