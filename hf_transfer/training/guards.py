"""Callbacks that keep a run safe: stop on a non-finite loss, checkpoint and stop on SIGTERM/SIGINT.

Both leave the run folder unfinished (no ``metrics.json``) with its checkpoints, so the same command
resumes it.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..errors import TrainingError

logger = logging.getLogger(__name__)


class NonFiniteLossGuard(TrainerCallback):
    """Raise ``TrainingError`` naming the step as soon as a training loss is NaN or infinite.

    The Trainer's ``logging_nan_inf_filter`` replaces such losses in the logs by the running mean, so a
    diverged run would otherwise train on and save garbage. ``TransferTrainer.compute_loss`` passes every
    training loss to :meth:`observe`, before backward, so no NaN gradient reaches the weights.
    """

    def __init__(self) -> None:
        self.state = None
        self.last_checkpoint: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.state = state
        if Path(args.output_dir).is_dir():
            self.last_checkpoint = get_last_checkpoint(args.output_dir)

    def on_save(self, args, state, control, **kwargs):
        self.last_checkpoint = str(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def observe(self, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        value = float(loss.detach().float().mean())
        state = self.state
        step = state.global_step + 1 if state is not None else "?"
        epoch = f" (epoch {state.epoch:.2f})" if state is not None and state.epoch is not None else ""
        kept = (f"The last good checkpoint, {self.last_checkpoint}, is kept; the same command resumes from it"
                if self.last_checkpoint else "No checkpoint had been saved yet")
        raise TrainingError(
            f"The training loss became {'nan' if math.isnan(value) else value} at step {step}{epoch}; training "
            f"stopped. {kept}. Lower training.learning_rate, set training.max_grad_norm (e.g. 1.0), or look for "
            "extreme values in the data.")


class GracefulStop(TrainerCallback):
    """On SIGTERM or SIGINT, finish the current step, save a checkpoint and stop training.

    A second signal gets the previous handler (Ctrl-C twice still kills at once). ``received`` tells the
    caller to exit without writing the final outputs.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        self._restore()
        logger.warning("Received %s: saving a checkpoint after this step, then stopping.", signal.Signals(signum).name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def _stop(self, control):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_step_end(self, args, state, control, **kwargs):
        return self._stop(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        return self._stop(control)

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()
