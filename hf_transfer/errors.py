"""Errors a user can fix: the CLI prints them without a traceback and exits with code 2."""

from __future__ import annotations


class HfTransferError(Exception):
    """Base class for mistakes in recipes, data, models or output folders."""


class RecipeError(HfTransferError):
    """A recipe field is unknown, missing, of the wrong type or has an impossible value."""


class DataError(HfTransferError):
    """The data cannot be loaded or does not fit the recipe (columns, labels, splits)."""


class ModelError(HfTransferError):
    """The model cannot be found, loaded or adapted to the task."""


class OutputError(HfTransferError):
    """The output folder holds something that must not be overwritten."""


class HubError(OutputError):
    """The Hugging Face Hub cannot be reached or refuses a push (network, offline mode, token, permissions).

    A subclass of ``OutputError`` (the push target is where the run's output goes), so callers that catch
    ``OutputError`` keep working."""


class TrainingError(HfTransferError):
    """Training itself went wrong in a way the recipe can fix (e.g. the loss became NaN)."""


class TrainingInterrupted(HfTransferError):
    """SIGTERM/SIGINT stopped training after a checkpoint was saved; the same command resumes."""

    def __init__(self, message: str, signal_number: int = 15) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


MAX_MESSAGE = 1000
"""Characters of one error line; longer ones (a library's message quoting a whole file) keep both ends."""


def user_message(error: BaseException) -> str:
    """The error's own message on one line, without the worker traceback torch's DataLoader adds when
    re-raising it, and cut in the middle when huge so that both what went wrong and how to fix it remain."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.partition(f"{type(error).__name__}: ")[2] or last
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if len(text) > MAX_MESSAGE:
        text = f"{text[: MAX_MESSAGE * 2 // 3]} [...] {text[-MAX_MESSAGE // 3:]}"
    return text
