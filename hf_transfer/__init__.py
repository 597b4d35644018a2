"""hf-transfer: transfer learning for image and text classification on the Hugging Face stack.

    from hf_transfer import Recipe, finetune
    result = finetune(Recipe.from_yaml("recipes/quickstart.yaml", ["training.num_train_epochs=1"]))
"""

from .errors import DataError, HfTransferError, ModelError, OutputError, RecipeError, TrainingError, TrainingInterrupted
from .recipe import Recipe

__version__ = "0.1.0"


# The functions below import their modules when called: ``import hf_transfer`` (and ``hf-transfer --help``)
# stays free of torch and transformers.


def finetune(recipe: Recipe, write_card: bool = True):
    """Train ``recipe`` end to end; see ``hf_transfer.runs.dispatch.finetune``."""
    from .runs.dispatch import finetune as _finetune

    return _finetune(recipe, write_card=write_card)


def evaluate(model_dir, data: str, split: str = "test", overrides: list[str] | None = None) -> dict:
    """Classification report of a saved model folder on a labelled split."""
    from .evaluation.evaluate import evaluate_model

    return evaluate_model(model_dir, data, split=split, overrides=overrides)


def push(model_dir, repo_id: str, private: bool = False) -> str:
    """Upload a finished run folder to the Hub (token from HF_TOKEN or ``hf auth login``)."""
    from .hub import push_folder

    return push_folder(model_dir, repo_id, private=private)


__all__ = ["Recipe", "finetune", "evaluate", "push", "HfTransferError", "RecipeError", "DataError", "ModelError",
           "OutputError", "TrainingError", "TrainingInterrupted", "__version__"]
