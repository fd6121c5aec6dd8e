"""docs/your-own-data.md: its commands, run as written (training cut to 2 iterations), in order."""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the recipe trains a network: it needs the 'train' extra (torch)")

from affseg.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "your-own-data.md"
SHARED = REPO.parent / "shared" / "data" / "neuroproof_train.h5"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.skipif(not SHARED.is_file(), reason=f"the recipe uses {SHARED}, absent here")
def test_the_documented_recipe_runs_as_written(tmp_path, monkeypatch, capsys):
    # the doc's commands run from the checkout, next to ../shared/data
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    os.symlink(SHARED.parents[1], tmp_path / "shared")
    monkeypatch.chdir(checkout)
    split = [b for b in _blocks("python") if "np_test.zarr" in b]
    assert len(split) == 1
    exec(split[0], {})
    commands = [line for block in _blocks("bash") for line in block.splitlines() if line.startswith("affseg ")]
    assert [c.split()[1] for c in commands] == ["train", "train", "predict", "segment", "segment", "evaluate", "evaluate",
                                                "view", "evaluate"]
    for command in commands:
        if command.startswith("affseg view"):  # serves until Ctrl-C (tests/view runs it); its report links below
            continue
        if command.startswith("affseg train --example"):
            args, _, target = command.partition(" > ")
            assert main(shlex.split(args)[1:]) == 0
            text = capsys.readouterr().out
            assert "iterations: 1000" in text  # the doc's checkpoint name below says 1000
            Path(target).write_text(text.replace("iterations: 1000", "iterations: 2"))
            continue
        command = command.replace("iteration_00001000", "iteration_00000002")
        assert main(shlex.split(command)[1:]) == 0, command
    out = capsys.readouterr().out
    assert "voi_split" in out or "VOI" in out
    assert Path("np_scores.json").is_file() and Path("np_curve.png").is_file()
