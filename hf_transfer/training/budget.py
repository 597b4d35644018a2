"""``training.time_budget``: the run's length follows a wall-clock budget (AutoGluon's ``time_limit``).

A budget replaces "how many epochs" by "how long". The time of an optimizer step is only known once the run
steps (data loading, the model, precision, the method's extra passes, the machine's load all count), so
``TimeBudgetCallback`` times the first steps of the run itself and then sets the run's length: the steps that fit
in what is left of the budget, after evaluations, checkpoints and the final evaluation of validation and test.
After each evaluation, and each time a quarter of the steps still planned have run, it plans again from
everything timed so far (the first steps alone misled: with ``group_by_length`` the longest batch comes first; a
4-minute SST-2 budget ended after 2 min 53 s, and an 8-minute MPNet run, which could afford one evaluation only,
after 4 minutes).
Evaluation then runs about ``TARGET_EVALUATIONS`` times (each epoch, when the run spans 5 to 10 epochs).

The run's LR schedule follows the chosen length: ``Trainer`` builds its scheduler from the provisional length at the
start, and the callback gives that scheduler the lambdas of the same schedule type built for the chosen total
(``follow_total``), so cosine and linear decay reach their end at the run's last step. Timing the real run (rather
than a separate probe before it) is what makes the estimate include everything a step costs, at the price that
the few timed steps ran at the provisional schedule's (lower) warm-up rate.

Until the length is chosen the run is provisional: at most the recipe's own ``max_steps`` or ``num_train_epochs``
when set (they stay upper bounds), else ``BUDGET_MAX_EPOCHS`` epochs. The choice is saved in each checkpoint
(``trainer_state.json``), so a resumed run continues to the same length.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..errors import RecipeError
from ..recipe import TIME_BUDGET

logger = logging.getLogger(__name__)

FEW_STEPS = 50
"""Fewer optimizer steps than this rarely move a pretrained model far enough: the run says so before training."""
TARGET_EVALUATIONS = 8
"""Evaluations during a budgeted run (enough for early stopping and the best checkpoint, few enough to be cheap)."""
BUDGET_MAX_EPOCHS = 100
"""The upper bound of a budgeted run's length when the recipe sets neither ``max_steps`` nor ``num_train_epochs``."""
WARMUP_STEPS = 2
"""Steps not timed: the first ones pay for lazy initialisation, data-loader start-up and allocator warm-up."""
PROBE_STEPS = 5
"""Steps timed before the run's length is chosen."""
SLACK = 0.05
"""Share of the budget kept free for what varies (step times, a slower evaluation)."""
EVAL_SHARE = 0.2
"""At most this share of the time left goes to evaluations during training (a short budget evaluates less often)."""
EVAL_COST = 0.5
"""An evaluation example's cost against a training example's, before an evaluation was timed: a forward pass is
about a third of forward + backward + update; a half is on the safe side."""
REPLAN_SHARE = 0.25
"""Share of the steps still planned after which the length is planned again, evaluation or not."""
VERY_LONG = 1 << 30
"""Evaluation/save interval before the cadence is chosen: nothing is evaluated while the first steps are timed."""

_DURATION = re.compile(r"^\s*(?:(?P<h>\d+(?:\.\d+)?)\s*h)?\s*(?:(?P<m>\d+(?:\.\d+)?)\s*m(?:in)?)?\s*"
                       r"(?:(?P<s>\d+(?:\.\d+)?)\s*s)?\s*$", re.IGNORECASE)


def parse_time_budget(value: Any) -> float | None:
    """Seconds of ``training.time_budget``: ``90s``, ``10m``, ``1h30m``, ``2.5h`` or a number of seconds.

    ``None`` when unset; anything else is one ``RecipeError`` line naming the field.
    """
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION.match(text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and match and any(match.group(unit) for unit in "hms"):
            seconds = sum(float(match.group(unit) or 0) * scale for unit, scale in (("h", 3600), ("m", 60), ("s", 1)))
    if seconds is None or seconds != seconds:
        raise RecipeError(f"'training.{TIME_BUDGET}' = {str(value)[:40]!r} is not a duration: write e.g. 90s, 10m, "
                          "1h30m, or a number of seconds.")
    if not 1 <= seconds <= 366 * 24 * 3600:
        raise RecipeError(f"'training.{TIME_BUDGET}' = {str(value)[:40]!r} must be between 1 second and a year; "
                          "write e.g. 90s, 10m or 1h30m.")
    return seconds


def describe(seconds: float) -> str:
    """``1h30m``, ``10m``, ``90s``-style text of a duration, as a recipe would write it."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or f"{seconds:g}s"


def budget_arguments(training: Mapping[str, Any]) -> dict[str, Any]:
    """``TrainingArguments`` values of a budgeted run before its length is known (see the module docstring).

    The recipe's own ``max_steps``/``num_train_epochs`` stay as upper bounds; unless it sets ``eval_strategy``,
    evaluation and checkpoints go by steps, at an interval the callback chooses once the step time is known.
    """
    values: dict[str, Any] = {}
    if "max_steps" not in training and "num_train_epochs" not in training:
        values["num_train_epochs"] = BUDGET_MAX_EPOCHS
    if "eval_strategy" not in training:
        values.update(eval_strategy="steps", eval_steps=VERY_LONG)
        if "save_strategy" not in training or training.get("load_best_model_at_end", True):
            values.update(save_strategy="steps", save_steps=VERY_LONG)
    return values


def follow_total(scheduler: Any, args: Any, total: int) -> bool:
    """Give ``scheduler`` the lambdas of ``args``' schedule type built for ``total`` steps, at its current step.

    True when the schedule now follows ``total`` (or never depended on it); False when it is of a kind whose
    total cannot be changed (a DeepSpeed scheduler): it then keeps the provisional total.
    """
    from transformers.optimization import get_scheduler

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps the real one
    groups = len(inner.optimizer.param_groups) if hasattr(inner, "optimizer") else 1
    dummy = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)], lr=1.0)
    fresh = get_scheduler(args.lr_scheduler_type, optimizer=dummy, num_warmup_steps=args.get_warmup_steps(total),
                          num_training_steps=total, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    if not isinstance(fresh, torch.optim.lr_scheduler.LambdaLR):
        return True  # e.g. reduce_lr_on_plateau: nothing in it depends on the total
    if not isinstance(inner, torch.optim.lr_scheduler.LambdaLR):
        return False
    inner.lr_lambdas = list(fresh.lr_lambdas)
    rates = [base * rule(inner.last_epoch) for base, rule in zip(inner.base_lrs, inner.lr_lambdas)]
    for group, rate in zip(inner.optimizer.param_groups, rates):
        group["lr"] = rate
    inner._last_lr = rates
    return True


@dataclass
class BudgetPlan:
    """What the budget decided, for the log, ``metrics.json`` and a resumed run."""

    budget_s: float
    step_s: float
    """Measured seconds per optimizer step (data loading included)."""
    eval_s: float
    """Seconds per evaluation: estimated, then measured after the first one."""
    save_s: float
    """Seconds per checkpoint: 0 until the first one was measured."""
    measured: bool
    """``eval_s``/``save_s`` were measured (the plan was made again after the first evaluation)."""
    max_steps: int
    eval_steps: int | None
    """Steps between evaluations (None: the recipe's own ``eval_strategy`` decides)."""
    evaluations: int
    decided_at_step: int
    elapsed_s: float
    """Seconds of the budget spent when the plan was (last) made."""

    def to_metrics(self) -> dict[str, Any]:
        report = {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}
        report["time_budget"] = describe(self.budget_s)
        return report


class TimeBudgetCallback(TrainerCallback, ExportableState):
    """Times the first optimizer steps, then sets the run's length and evaluation cadence to fit the budget.

    ``clock`` (seconds, monotonic) is injectable so that tests decide what a step costs; ``started`` is when the
    budget began (before model loading and feature extraction: they are part of the run), by default when training
    starts. ``eval_examples``: validation examples evaluated during training; ``final_examples``: validation and
    test examples evaluated after it. ``adapt_cadence``: choose ``eval_steps`` (False when the recipe set its own
    ``eval_strategy``).
    """

    def __init__(self, seconds: float, eval_examples: int = 0, final_examples: int = 0, adapt_cadence: bool = True,
                 clock: Callable[[], float] = time.perf_counter, started: float | None = None) -> None:
        self.seconds = float(seconds)
        self.eval_examples = int(eval_examples)
        self.final_examples = int(final_examples)
        self.adapt_cadence = adapt_cadence
        self.clock = clock
        self.started = started
        self.plan: BudgetPlan | None = None
        self.stopped_early = False
        self._probe_start: float | None = None
        self._probe_from = 0
        self._overhead = 0.0
        self._mark = 0.0
        self._evaluating_since: float | None = None
        self._eval_times: list[float] = []
        self._save_times: list[float] = []
        self._cap = 0
        self._steps_per_epoch = 1
        self._resumed = False
        self._planned_with = 0
        """Evaluations timed when the length was last planned: each new one plans again."""
        self._replan_at = 0
        """The step at which the length is planned again even without an evaluation."""

    # ---------------------------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """Saved in each checkpoint: a resumed run keeps the length chosen before (``on_train_begin``)."""
        return {"args": {"seconds": self.seconds, "eval_examples": self.eval_examples,
                         "final_examples": self.final_examples, "adapt_cadence": self.adapt_cadence},
                "attributes": {"plan": asdict(self.plan) if self.plan else None}}

    def report(self) -> dict[str, Any]:
        """``metrics.json``'s ``train.time_budget``: the budget, the step time, the chosen steps."""
        if self.plan is None:
            return {"time_budget": describe(self.seconds), "budget_s": self.seconds,
                    "note": "the run ended before its steps were timed"}
        return {**self.plan.to_metrics(), "stopped_early": self.stopped_early}

    # ------------------------------------------------------------------------------------- events

    def on_train_begin(self, args, state, control, lr_scheduler=None, train_dataloader=None, **kwargs):
        now = self.clock()
        if self.started is None:
            self.started = now
        self._mark = now
        self._cap = int(state.max_steps)
        batches = len(train_dataloader) if train_dataloader is not None and hasattr(train_dataloader, "__len__") else 0
        self._steps_per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps)) if batches else max(
            1, round(state.max_steps / max(state.num_train_epochs, 1)))
        saved = (state.stateful_callbacks or {}).get(type(self).__name__) if state.global_step else None
        saved_plan = saved.get("attributes", {}).get("plan") if isinstance(saved, dict) else None
        if saved_plan:  # resumed: the length chosen before, not a new one from the time left now
            self.plan = BudgetPlan(**saved_plan)
            self._resumed = True
            self._apply(args, state, lr_scheduler)
            logger.info("Time budget %s: resuming the planned %d steps.", describe(self.seconds), self.plan.max_steps)

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        now = self.clock()
        step = state.global_step
        if self.plan is None:
            if step == WARMUP_STEPS or (self._probe_start is None and step > WARMUP_STEPS):
                self._probe_start, self._overhead, self._probe_from = now, 0.0, step
            elif self._probe_start is not None and step - self._probe_from >= PROBE_STEPS:
                step_s = (now - self._probe_start - self._overhead) / (step - self._probe_from)
                self._decide(args, state, control, lr_scheduler, now, max(step_s, 1e-9))
        elif not self._resumed and (len(self._eval_times) > self._planned_with or step >= self._replan_at):
            self._planned_with = len(self._eval_times)  # an evaluation was timed, or a share of the steps ran:
            self._decide(args, state, control, lr_scheduler, now, self._mean_step_s(now, step),  # plan again
                         measured=bool(self._eval_times))
        if self.plan is not None and not control.should_training_stop:
            self._guard(args, state, control, now)
        self._mark = now
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        self._eval_times.append(self._account())

    def on_save(self, args, state, control, **kwargs):
        self._save_times.append(self._account())

    def _mean_step_s(self, now: float, step: int) -> float:
        """Seconds per optimizer step over all steps since timing began, evaluations and checkpoints left out.

        The first timed steps alone can mislead: ``group_by_length`` puts the longest batch first, and a machine's
        load changes; the mean over the run so far follows what the steps really cost."""
        if self._probe_start is None or step <= self._probe_from:
            return self.plan.step_s
        return max((now - self._probe_start - self._overhead) / (step - self._probe_from), 1e-9)

    def _account(self) -> float:
        """Seconds since the step ended (or the evaluation before this checkpoint): not step time."""
        now = self.clock()
        spent = now - self._mark
        self._overhead += spent
        self._mark = now
        return spent

    # ------------------------------------------------------------------------------------ planning

    def _costs(self, args, step_s: float, measured: bool) -> tuple[float, float]:
        """Seconds of one evaluation and of one checkpoint: timed once the first ones ran, else estimated (an
        evaluation from its examples against a training step's; a checkpoint as nothing, until timed)."""
        if measured:
            return (sum(self._eval_times) / len(self._eval_times),
                    sum(self._save_times) / len(self._save_times) if self._save_times else 0.0)
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
        return step_s * EVAL_COST * self.eval_examples / max(1, args.world_size) / max(per_step, 1), 0.0

    def _decide(self, args, state, control, lr_scheduler, now: float, step_s: float, measured: bool = False) -> None:
        step = state.global_step
        eval_s, save_s = self._costs(args, step_s, measured)
        saves = getattr(args.save_strategy, "value", args.save_strategy) != "no"
        each = eval_s + (save_s if saves else 0.0)  # an evaluation during training writes a checkpoint
        final_s = eval_s * self.final_examples / max(self.eval_examples, 1) + save_s
        left = self.seconds * (1 - SLACK) - (now - self.started) - final_s
        steps = min(self._cap, step + max(0, math.floor(left / step_s)))
        for _ in range(4):  # the evaluations depend on the length and the length on them: settles in a few rounds
            interval = self._interval(args, state, steps, left, each)
            evaluations = 0 if interval is None else math.ceil(steps / interval) - step // interval
            steps = min(self._cap, step + max(0, math.floor((left - evaluations * each) / step_s)))
        interval = self._interval(args, state, steps, left, each)
        evaluations = 0 if interval is None else math.ceil(steps / interval) - step // interval
        first = self.plan is None
        self._replan_at = step + max(1, math.ceil(REPLAN_SHARE * (steps - step)))
        if not first and abs(steps - self.plan.max_steps) <= 0.05 * self.plan.max_steps:
            self.plan.eval_s, self.plan.save_s, self.plan.measured = eval_s, save_s, measured  # close enough: keep
            return
        self.plan = BudgetPlan(budget_s=self.seconds, step_s=step_s, eval_s=eval_s, save_s=save_s, measured=measured,
                               max_steps=max(steps, step), eval_steps=interval if self.adapt_cadence else None,
                               evaluations=evaluations, decided_at_step=step, elapsed_s=now - self.started)
        followed = self._apply(args, state, lr_scheduler)
        if steps <= step:
            self._stop(args, control, f"the time budget leaves no time for more steps after step {step}")
        bound = f" (the upper bound, {self._cap})" if steps == self._cap and steps > step else ""
        costs = f"~{eval_s:.2f} s each + {save_s:.2f} s checkpoint, {'measured' if measured else 'estimated'}"
        cadence = (f"evaluating every {interval} steps ({evaluations} evaluations left, {costs})" if self.adapt_cadence
                   else f"evaluation as training.eval_strategy says ({costs})")
        logger.info("Time budget %s: %.4f s per optimizer step (%s); training %d steps%s, %.1f epochs; %s.%s",
                    describe(self.seconds), step_s,
                    f"timed over steps {self._probe_from + 1}-{step}" if first else
                    f"re-planned at step {step} from the steps and evaluations timed so far",
                    self.plan.max_steps, bound, self.plan.max_steps / self._steps_per_epoch, cadence,
                    "" if followed else " The LR scheduler cannot change its total: it keeps the provisional one.")
        if first and self.plan.max_steps < FEW_STEPS:
            logger.warning("training.time_budget %s leaves time for %d optimizer steps (%.3f s each): fewer than %d "
                           "rarely move a pretrained model far. Raise the budget or use a smaller "
                           "training.per_device_train_batch_size.", describe(self.seconds), self.plan.max_steps,
                           step_s, FEW_STEPS)

    def _interval(self, args, state, steps: int, left: float, each: float) -> int | None:
        """Steps between evaluations for a run of ``steps``: the recipe's own ``eval_strategy``, or chosen: about
        ``TARGET_EVALUATIONS`` (each epoch when that gives 5-10), fewer when they would take more than
        ``EVAL_SHARE`` of the time left. None when nothing is evaluated."""
        per_epoch = self._steps_per_epoch
        if self.adapt_cadence:
            affordable = max(1, math.floor(EVAL_SHARE * left / each)) if each > 0 else TARGET_EVALUATIONS
            count = min(TARGET_EVALUATIONS, affordable)
            if 5 <= steps / per_epoch <= min(10, affordable):
                return per_epoch
            return max(1, math.ceil(steps / count))
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        if strategy == "epoch":
            return per_epoch
        if strategy == "steps":
            return max(1, int(state.eval_steps))
        return None

    def _apply(self, args, state, lr_scheduler) -> bool:
        plan = self.plan
        state.max_steps = plan.max_steps
        if plan.eval_steps:
            state.eval_steps = state.save_steps = plan.eval_steps
        return True if lr_scheduler is None else follow_total(lr_scheduler, args, plan.max_steps)

    def _guard(self, args, state, control, now: float) -> None:
        """Stop when one more step and the final evaluation would no longer fit (estimates can be wrong)."""
        plan = self.plan
        last = plan.eval_s + plan.save_s  # the evaluation and checkpoint at the last step
        final_s = plan.eval_s * self.final_examples / max(self.eval_examples, 1) + plan.save_s
        if now - self.started + plan.step_s + last + final_s > self.seconds and state.global_step < state.max_steps:
            self._stop(args, control, f"the time budget is spent at step {state.global_step} of {state.max_steps}")

    def _stop(self, args, control, why: str) -> None:
        """End training after this step; its model is evaluated and checkpointed as at a planned end."""
        self.stopped_early = True
        control.should_training_stop = True
        control.should_evaluate = control.should_evaluate or getattr(args.eval_strategy, "value", args.eval_strategy) != "no"
        control.should_save = control.should_save or getattr(args.save_strategy, "value", args.save_strategy) != "no"
        logger.warning("Stopping: %s.", why)


def budget_callback(training: Mapping[str, Any], sizes: Mapping[str, int], started: float) -> TimeBudgetCallback | None:
    """The callback of a run with ``training.time_budget`` (``None`` without one); ``started``: when the run's
    clock started (``time.perf_counter``), ``sizes``: examples per split."""
    seconds = parse_time_budget(training.get(TIME_BUDGET))
    if seconds is None:
        return None
    evaluated = sizes.get("validation", 0)
    return TimeBudgetCallback(seconds, eval_examples=evaluated, final_examples=evaluated + sizes.get("test", 0),
                              adapt_cadence="eval_strategy" not in training, started=started)
