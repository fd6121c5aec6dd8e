"""TensorBoard event files for a training run, when the ``tensorboard`` package is installed.

``affseg train`` writes them to ``<run>/tensorboard/`` (beside ``log.csv``; view with
``tensorboard --logdir <run>``): at every logged iteration the loss, its terms, the learning rate
and the time split; at every snapshot a section of the raw data, the target and the predicted
affinities (first 3 channels as RGB). Without the package (or with ``train.tensorboard: false``)
nothing is written and nothing is said.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["TENSORBOARD_DIR", "TensorBoardLog", "tensorboard_available"]

TENSORBOARD_DIR = "tensorboard"
"""The folder of the event files inside a run folder."""

# parts of the loss (keys of train._losses' parts) -> their tag under terms/; loss_affs is named
# after the phase's affinity loss (terms/mse, terms/malis, terms/random_walker, ...)
_TERMS = {"loss_lsds": "lsds", "loss_masks": "dice"}


def _summary_writer():
    """torch's SummaryWriter class, or None when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        return None
    return SummaryWriter


def tensorboard_available() -> bool:
    """Whether TensorBoard event files can be written (the ``tensorboard`` package is installed).

    Returns
    -------
    available : bool
    """
    return _summary_writer() is not None


class TensorBoardLog:
    """The TensorBoard side of a training run's log; every method does nothing when disabled.

    Parameters
    ----------
    output : Path
        The run folder; the event files go to ``output / "tensorboard"``.
    start : int
        The iteration the run (re)starts from: events of later iterations that an interrupted
        run left are hidden (TensorBoard's ``purge_step``), as ``log.csv`` drops their rows.
    enabled : bool
        False: write nothing (the config's ``train.tensorboard``).
    """

    def __init__(self, output: Path, start: int, *, enabled: bool = True):
        writer = _summary_writer() if enabled else None
        self.writer = None if writer is None else writer(log_dir=str(Path(output) / TENSORBOARD_DIR),
                                                         purge_step=start + 1)

    def scalars(self, iteration: int, *, phase: str, loss: float, parts: dict, learning_rate: float,
                times: dict[str, float]) -> None:
        """Log one iteration: ``loss/total`` and ``loss/<phase>``, the terms (``terms/<phase>`` for
        the affinity loss, ``terms/lsds``, ``terms/dice``), ``learning_rate`` and ``time/<part>``
        with ``time/iteration`` their sum.

        Parameters
        ----------
        iteration : int
            The global step.
        phase : str
            The phase of the loss (``mse``, ``bce``, ``malis``, ``random_walker``, ...).
        loss : float
            The total loss.
        parts : dict
            The loss terms (``loss_affs``, ``loss_lsds``, ...); values that are not numbers are skipped.
        learning_rate : float
            The optimizer's learning rate.
        times : dict of str to float
            Seconds per part of the iteration (``data``, ``forward``, ``loss``, ``backward``).
        """
        if self.writer is None:
            return
        add = self.writer.add_scalar
        add("loss/total", loss, iteration)
        add(f"loss/{phase}", loss, iteration)
        for key, value in parts.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name = phase if key == "loss_affs" else _TERMS.get(key, key.removeprefix("loss_"))
                add(f"terms/{name}", value, iteration)
        add("learning_rate", learning_rate, iteration)
        for key, value in times.items():
            add(f"time/{key}", value, iteration)
        add("time/iteration", sum(times.values()), iteration)

    def images(self, iteration: int, batch: dict, outputs: dict) -> None:
        """Log the middle section of the first crop: ``snapshot/raw`` (grey), and
        ``snapshot/target_<head>`` and ``snapshot/pred_<head>`` (first 3 channels as RGB, in
        [0, 1]) of the affinities (and the LSDs, if the network predicts them).

        Parameters
        ----------
        iteration : int
            The global step.
        batch : dict of str to tensor
            ``raw`` (batch, 1, *spatial) and the targets ``affs`` (and ``lsds``).
        outputs : dict of str to tensor
            The network's ``affs`` (and ``lsds``), (batch, channels, *spatial).
        """
        if self.writer is None:
            return
        raw = _section(batch["raw"][0, 0].detach().cpu().float().numpy())
        self.writer.add_image("snapshot/raw", np.clip(raw, 0, 1), iteration, dataformats="HW")
        for name in ("affs", "lsds"):
            if name in outputs and name in batch:
                for kind, tensor in (("target", batch[name]), ("pred", outputs[name])):
                    rgb = _rgb(tensor[0].detach().cpu().float().numpy())
                    self.writer.add_image(f"snapshot/{kind}_{name}", rgb, iteration, dataformats="CHW")

    def flush(self) -> None:
        """Write what is pending to disk."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _section(volume: np.ndarray) -> np.ndarray:
    """The middle z section of a (z, y, x) array, or the (y, x) array itself."""
    return volume[volume.shape[0] // 2] if volume.ndim == 3 else volume


def _rgb(channels: np.ndarray) -> np.ndarray:
    """(channels, *spatial) -> (3, y, x) float in [0, 1]: the first 3 channels of the middle
    section (missing channels black)."""
    spatial = channels.ndim - 1
    section = channels[:, channels.shape[1] // 2] if spatial == 3 else channels
    rgb = np.zeros((3,) + section.shape[1:], np.float32)
    rgb[: min(3, section.shape[0])] = section[:3]
    return np.clip(rgb, 0, 1)
