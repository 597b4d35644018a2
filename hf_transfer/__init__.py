"""hf-transfer: transfer learning for image, text and image + text classification on the Hugging Face stack.

    from hf_transfer import Recipe, finetune
    result = finetune(Recipe.from_yaml("recipes/quickstart.yaml", ["training.num_train_epochs=1"]))
"""

from .errors import (DataError, HfTransferError, HubError, ModelError, OutputError, RecipeError, TrainingError,
                     TrainingInterrupted)
from .recipe import Recipe

__version__ = "0.1.0"

# The fused image-text model's config and model classes join transformers' AutoConfig/AutoModel here, so a
# saved folder loads with AutoModel.from_pretrained after ``import hf_transfer``, without trust_remote_code.
from .tasks import fusion as _fusion  # noqa: E402,F401  (registration; imports torch and transformers)
# Likewise the mean-pooled text classifier (model.pooling: mean), with AutoModelForSequenceClassification too, so
# pipeline("text-classification", model=folder) loads it.
from .tasks import text_pooling as _text_pooling  # noqa: E402,F401


# The functions below import their modules when called.


def finetune(recipe: Recipe, write_card: bool = True):
    """Train ``recipe`` end to end; see ``hf_transfer.runs.dispatch.finetune``."""
    from .runs.dispatch import finetune as _finetune

    return _finetune(recipe, write_card=write_card)


def evaluate(model_dir, data: str, split: str = "test", overrides: list[str] | None = None) -> dict:
    """Classification report of a saved model folder on a labelled split."""
    from .evaluation.evaluate import evaluate_model

    return evaluate_model(model_dir, data, split=split, overrides=overrides)


def predict(model_dir, images=None, texts=None, text_pairs=None, top_k: int | None = None) -> list:
    """Labels and scores for raw inputs; see ``hf_transfer.prediction.predict``."""
    from .prediction import predict as _predict

    return _predict(model_dir, images=images, texts=texts, text_pairs=text_pairs, top_k=top_k)


def push(model_dir, repo_id: str, private: bool = False, *, revision: str | None = None, create_pr: bool = False,
         commit_message: str | None = None, include_subruns: bool = False) -> str:
    """Upload a finished run folder to the Hub (token from HF_TOKEN or ``hf auth login``); returns the commit URL,
    or the pull request's with ``create_pr``.

    ``revision``: branch to commit to (created if missing); ``create_pr``: open a pull request instead;
    ``private``: create the repo private; ``include_subruns``: also upload ``folds/``, ``stages/``,
    ``learning_curve/``, ``modalities/`` and ``scratch/`` (checkpoints and hidden files never). Network, offline
    and permission failures raise ``hf_transfer.errors.HubError`` (an ``OutputError``).
    """
    from .hub import push_folder

    return push_folder(model_dir, repo_id, private=private, commit_message=commit_message, revision=revision,
                       create_pr=create_pr, include_subruns=include_subruns)


__all__ = ["Recipe", "finetune", "evaluate", "predict", "push", "HfTransferError", "RecipeError", "DataError", "ModelError", "HubError",
           "OutputError", "TrainingError", "TrainingInterrupted", "__version__"]
