"""Upload a run folder to the Hugging Face Hub.

The token is read by ``huggingface_hub`` from ``HF_TOKEN`` or the login cache; hf-transfer never
receives, logs or writes it. Everything that can be known before training (the repo id's syntax, offline
mode, whether a token with write access exists) is checked before it, so a long run never ends in a push
that could not have worked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import OutputError
from .training.outputs import METRICS_FILE

logger = logging.getLogger(__name__)

#: Training state that stays local: checkpoints, the scratch baseline and temporary files.
NOT_UPLOADED = ["checkpoints/*", "scratch/*", ".staging/*", ".*", "**/.*"]

#: How to make the token available; said in every message about it.
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"


def _short(value: object, limit: int = 160) -> str:
    """One line of at most ``limit`` characters: hub errors carry newlines, URLs and request ids."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _network_errors() -> tuple[type[BaseException], ...]:
    """What ``huggingface_hub`` raises when the Hub cannot be reached or refuses a request.

    ``HTTPError`` is the HTTP client's base class as huggingface_hub re-exports it (connection refused,
    DNS failure, timeouts); ``HfHubHTTPError`` (an ``OSError``) covers 4xx/5xx answers; ``OfflineModeIsEnabled``
    (a ``ConnectionError``) and ``LocalTokenNotFoundError`` are ``OSError`` too.
    """
    from huggingface_hub.errors import HTTPError

    return HTTPError, OSError


def check_repo_id(repo_id: str | None, field: str) -> str:
    """``repo_id`` if huggingface_hub's own validator accepts it, else an OutputError naming ``field``."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise OutputError(f"{field} is empty: set it to 'user/model-name'.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise OutputError(f"{field} = '{_short(repo_id, 60)}' is not a valid Hub repo id: use 'user/model-name' "
                          "(letters, digits, '-', '_', '.'; no spaces, no '--' or '..', at most 96 characters)."
                          ) from None
    return repo_id


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def check_push_target(repo_id: str | None, push: bool) -> None:
    """Pre-flight for ``output.push_to_hub``: a valid ``output.hub_model_id`` and a token with write access.

    The token is checked with ``HfApi().whoami()`` only when the Hub may be reached; with ``HF_HUB_OFFLINE``
    set the check is skipped with a log line (the push at the end will then fail; ``hf-transfer push`` does it
    later).
    """
    if not push:
        return
    if not repo_id:
        raise OutputError("'output.push_to_hub' is true but 'output.hub_model_id' is empty: set it to "
                          "'user/model-name', or set output.push_to_hub=false.")
    check_repo_id(repo_id, "'output.hub_model_id'")
    if _offline():
        logger.warning("HF_HUB_OFFLINE is set: the Hub token is not checked and the push to %s after training "
                       "will fail; push the finished folder later with `hf-transfer push`.", repo_id)
        return
    from huggingface_hub import HfApi

    try:
        identity = HfApi().whoami()
    except _network_errors() as error:
        raise OutputError(f"'output.push_to_hub' is true but the Hub token cannot be checked ({_short(error)}): "
                          f"{LOGIN_HINT} and check your network, or set output.push_to_hub=false and push later "
                          "with `hf-transfer push`.") from None
    role = ((identity.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise OutputError(f"'output.push_to_hub' is true but the Hub token is read-only, so the push to "
                          f"'{repo_id}' would fail: {LOGIN_HINT} with a token that has write access.")


def push_folder(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload the finished model folder; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    folder = Path(folder)
    check_repo_id(repo_id, "repo_id")
    if not (folder / METRICS_FILE).is_file() or not (folder / "config.json").is_file():
        raise OutputError(f"'{folder}' is not a finished hf-transfer run (no metrics.json/config.json); "
                          "finish training before pushing.")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   ignore_patterns=NOT_UPLOADED,
                                   commit_message=commit_message or "Upload model trained with hf-transfer")
    except OfflineModeIsEnabled:
        raise OutputError(f"Cannot push '{folder}' to '{repo_id}': HF_HUB_OFFLINE is set. Unset it (and "
                          "TRANSFORMERS_OFFLINE) on a machine that reaches the Hub, then run `hf-transfer push` "
                          "again.") from None
    except (*_network_errors(), ValueError) as error:
        raise OutputError(f"Pushing '{folder}' to '{repo_id}' failed ({_short(error)}); {LOGIN_HINT}, check "
                          "the repo id and your network, then run `hf-transfer push` again.") from None
    logger.info("Pushed %s to https://huggingface.co/%s", folder, repo_id)
    return str(getattr(commit, "commit_url", commit))
