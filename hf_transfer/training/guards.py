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

from ..errors import TrainingError
from .checkpoints import checkpoint_dir, last_complete_checkpoint

logger = logging.getLogger(__name__)


class NonFiniteLossGuard(TrainerCallback):
    """Raise ``TrainingError`` naming the step as soon as a training loss is NaN or infinite.

    The Trainer's ``logging_nan_inf_filter`` replaces such losses in the logs by the running mean, so a
    diverged run would otherwise train on and save garbage. ``TransferTrainer.compute_loss`` passes every
    training loss to :meth:`observe`, before backward, so no NaN gradient reaches the weights.

    With ``on_nonfinite="skip"`` (``evaluation.on_nonfinite_loss``) a step whose loss or gradients are not
    finite drops its gradients before the optimizer step, as fp16 loss scaling does: no weight, momentum or
    weight-decay update; the LR schedule still advances. The steps are listed in ``skipped_steps``. After
    ``MAX_CONSECUTIVE_SKIPS`` in a row the model has diverged and the run stops as in ``stop`` mode.
    The decision reads the gradients after DDP's all-reduce, so every process skips the same steps.
    """

    MAX_CONSECUTIVE_SKIPS = 10

    def __init__(self, on_nonfinite: str = "stop") -> None:
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', not {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self.state = None
        self.last_checkpoint: str | None = None
        self.skipped_steps: list[int] = []
        self._bad_loss = False
        self._in_a_row = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.state = state
        self.last_checkpoint = last_complete_checkpoint(Path(args.output_dir))

    def on_save(self, args, state, control, **kwargs):
        self.last_checkpoint = str(checkpoint_dir(args.output_dir, state.global_step))

    def observe(self, loss: torch.Tensor) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        if self.on_nonfinite == "skip":
            self._bad_loss = True
            return
        self._stop(float(loss.detach().float().mean()))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.on_nonfinite != "skip" or model is None:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        bad = self._bad_loss or not all(bool(torch.isfinite(g).all()) for g in grads)
        self._bad_loss = False
        if not bad:
            self._in_a_row = 0
            return
        for parameter in model.parameters():
            parameter.grad = None  # torch optimizers skip parameters without a gradient
        step = state.global_step + 1
        self.skipped_steps.append(step)
        self._in_a_row += 1
        logger.warning("Non-finite loss or gradient at step %d: skipped that optimizer step "
                       "(evaluation.on_nonfinite_loss=skip; %d skipped so far).", step, len(self.skipped_steps))
        if self._in_a_row >= self.MAX_CONSECUTIVE_SKIPS:
            self._stop(float("nan"), f" after {self._in_a_row} skipped steps in a row")

    def _stop(self, value: float, why: str = "") -> None:
        state = self.state
        step = state.global_step + 1 if state is not None else "?"
        epoch = f" (epoch {state.epoch:.2f})" if state is not None and state.epoch is not None else ""
        kept = (f"The last good checkpoint, {self.last_checkpoint}, is kept; the same command resumes from it"
                if self.last_checkpoint else "No checkpoint had been saved yet")
        raise TrainingError(
            f"The training loss became {'nan' if math.isnan(value) else value} at step {step}{epoch}{why}; "
            f"training stopped. {kept}. Lower training.learning_rate, set training.max_grad_norm (e.g. 1.0), "
            "or look for extreme values in the data.")


class GracefulStop(TrainerCallback):
    """On SIGTERM or SIGINT, finish the current step, save a checkpoint and stop training, without evaluating.

    A pre-empted machine gets seconds between SIGTERM and SIGKILL: stopping mid-epoch would otherwise make
    ``Trainer`` evaluate the partial epoch (``on_epoch_end``) before saving. The rerun evaluates when its
    epoch ends. A second signal gets the previous handler (Ctrl-C twice still kills at once). ``received``
    tells the caller to exit without writing the final outputs.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._saved_at: int | None = None

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

    def _stop(self, state, control):
        if self.received is not None:
            control.should_save = self._saved_at != state.global_step  # once: on_epoch_end follows on_step_end
            control.should_evaluate = False
            control.should_training_stop = True
        return control

    def on_step_end(self, args, state, control, **kwargs):
        return self._stop(state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        return self._stop(state, control)

    def on_save(self, args, state, control, **kwargs):
        self._saved_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self._restore()
