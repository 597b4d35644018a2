"""Upload a run folder to the Hugging Face Hub.

The token is read by ``huggingface_hub`` from ``HF_TOKEN`` or the login cache; hf-transfer never
receives, logs or writes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import OutputError
from .training.outputs import METRICS_FILE

logger = logging.getLogger(__name__)

#: Training state that stays local: checkpoints, the scratch baseline and temporary files.
NOT_UPLOADED = ["checkpoints/*", "scratch/*", ".staging/*", ".*", "**/.*"]


def push_folder(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload the finished model folder; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file() or not (folder / "config.json").is_file():
        raise OutputError(f"'{folder}' is not a finished hf-transfer run (no metrics.json/config.json); "
                          "finish training before pushing.")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   ignore_patterns=NOT_UPLOADED,
                                   commit_message=commit_message or "Upload model trained with hf-transfer")
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise OutputError(f"Pushing '{folder}' to '{repo_id}' failed: {error}. Log in with `hf auth login` or set "
                          "HF_TOKEN, check the repo id and your network, then run `hf-transfer push` again.") from None
    logger.info("Pushed %s to https://huggingface.co/%s", folder, repo_id)
    return str(getattr(commit, "commit_url", commit))
