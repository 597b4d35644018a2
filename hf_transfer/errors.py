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
