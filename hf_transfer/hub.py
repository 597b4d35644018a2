"""Upload a run folder to the Hugging Face Hub.

The token is read by ``huggingface_hub`` from ``HF_TOKEN`` or the login cache; hf-transfer never
receives, logs or writes it. Everything that can be known before training (the repo id's syntax, offline
mode, whether a token with write access to the namespace exists) is checked before it, so a long run never ends
in a push that could not have worked.

What is uploaded: the run's own model folder (model, processor, ``README.md``, ``metrics.json``, plots,
``recipe.yaml``, the Trainer's results and ``logs/``). Sub-runs (``folds/``, ``stages/``, ``learning_curve/``,
``modalities/``, ``scratch/``, ``source_only/``) only when asked for (``include_subruns``); checkpoints, the
ownership marker, the lock and the hidden ``.previous``/``.next``/``.staging`` folders never, at any depth.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import HubError, OutputError
from .training.outputs import (BASELINES, CHECKPOINTS, CONTAINERS, LOCK_FILE, METRICS_FILE, NEXT, OWNER_FILE,
                               PREVIOUS, STAGING, holds_claim, lock_holder)

logger = logging.getLogger(__name__)

#: Never uploaded, at the top or inside a sub-run. Patterns are ``huggingface_hub.utils.filter_repo_objects``'s:
#: fnmatch on the path relative to the folder, where ``*`` also matches ``/``. Every hidden name (the ownership
#: marker, the lock, ``.previous``, ``.next``, ``.staging``, ``write_atomic``'s temporary files) starts with a dot.
NEVER_UPLOADED = [".*", "*/.*", f"{CHECKPOINTS}/*", f"*/{CHECKPOINTS}/*", OWNER_FILE, LOCK_FILE,
                  f"{PREVIOUS}/*", f"{NEXT}/*", f"{STAGING}/*", "*-initial-weights/*"]
#: Folders of sub-runs: the baselines (from scratch, source only) and the protocols' runs (cross-validation folds,
#: stages, learning-curve fractions, each input alone). Uploaded only with ``include_subruns``.
SUBRUN_FOLDERS = (*BASELINES, *CONTAINERS)
#: What a plain push leaves out: sub-runs and everything in ``NEVER_UPLOADED``.
NOT_UPLOADED = [*NEVER_UPLOADED, *(f"{name}/*" for name in SUBRUN_FOLDERS)]

#: How to make the token available; said in every message about it.
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"
DEFAULT_COMMIT_MESSAGE = "Upload model trained with hf-transfer"


def ignore_patterns(include_subruns: bool = False) -> list[str]:
    """The ``ignore_patterns`` given to ``HfApi.upload_folder``."""
    return list(NEVER_UPLOADED if include_subruns else NOT_UPLOADED)


def files_to_upload(folder: str | Path, include_subruns: bool = False) -> list[str]:
    """The paths (relative, ``/``-separated, sorted) that ``push_folder`` would upload from ``folder``.

    Lists the folder as ``HfApi.upload_folder`` does and filters it with huggingface_hub's own
    ``filter_repo_objects`` and the same patterns, so this is exactly the upload's file list.
    """
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.glob("**/*") if path.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=ignore_patterns(include_subruns)))


def _short(value: object, limit: int = 160) -> str:
    """One line of at most ``limit`` characters: hub errors carry newlines, URLs and request ids."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _network_errors() -> tuple[type[BaseException], ...]:
    """What ``huggingface_hub`` raises when the Hub cannot be reached or refuses a request.

    ``HTTPError`` is the HTTP client's base class as huggingface_hub re-exports it (``ConnectError``: connection
    refused, DNS failure; timeouts); ``HfHubHTTPError`` (an ``OSError``) covers 4xx/5xx answers;
    ``OfflineModeIsEnabled`` (a ``ConnectionError``) and ``LocalTokenNotFoundError`` are ``OSError`` too, and so is
    ``requests.ConnectionError``. The ``httpx`` and ``requests`` base classes are added when they are installed (a
    huggingface_hub built on one of them, or code under it that uses them).
    """
    from huggingface_hub.errors import HTTPError

    errors: list[type[BaseException]] = [HTTPError, OSError]
    for module, name in (("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


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


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _namespaces(identity: dict) -> set[str]:
    """The user's own name and the organisations the whoami answer lists."""
    names = {identity.get("name")}
    names.update(org.get("name") for org in identity.get("orgs") or [] if isinstance(org, dict))
    return {name for name in names if isinstance(name, str) and name}


def check_push_target(repo_id: str | None, push: bool) -> None:
    """Pre-flight for ``output.push_to_hub``: a valid ``output.hub_model_id`` and a token with write access.

    The syntax is checked with huggingface_hub's ``validate_repo_id``. The token is checked with one
    ``HfApi().whoami()`` only when the Hub may be reached: it must exist, not be read-only, and belong to the
    repo's namespace (the user or one of their organisations). With ``HF_HUB_OFFLINE`` set, one log line says that
    access could not be checked, and the run goes on (``hf-transfer push`` uploads the finished folder later).
    """
    if not push:
        return
    if not repo_id:
        raise OutputError("'output.push_to_hub' is true but 'output.hub_model_id' is empty: set it to "
                          "'user/model-name', or set output.push_to_hub=false.")
    check_repo_id(repo_id, "'output.hub_model_id'")
    if hub_offline():
        logger.warning("HF_HUB_OFFLINE is set: Hub access (token, write permission) for %s could not be checked; "
                       "training goes on and the push is skipped at the end: push the folder later with "
                       "`hf-transfer push`.", repo_id)
        return
    from huggingface_hub import HfApi

    try:
        identity = HfApi().whoami()
    except _network_errors() as error:
        raise HubError(f"'output.push_to_hub' is true but the Hub token cannot be checked ({_short(error)}): "
                       f"{LOGIN_HINT} and check your network, or set output.push_to_hub=false and push later "
                       "with `hf-transfer push`.") from None
    role = ((identity.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"'output.push_to_hub' is true but the Hub token is read-only, so the push to "
                       f"'{repo_id}' would fail: {LOGIN_HINT} with a token that has write access.")
    namespace, _, _ = repo_id.rpartition("/")
    allowed = _namespaces(identity)
    if namespace and allowed and namespace not in allowed:
        raise HubError(f"'output.hub_model_id' = '{repo_id}' is in the namespace '{namespace}', but the Hub token "
                       f"belongs to {', '.join(sorted(repr(n) for n in allowed))}, so the push would fail: use "
                       f"'{identity.get('name') or 'user'}/{repo_id.rpartition('/')[2]}', or {LOGIN_HINT} as a "
                       "member of that organisation.")


def _check_folder(folder: Path) -> None:
    if not (folder / METRICS_FILE).is_file() or not (folder / "config.json").is_file():
        raise OutputError(f"'{folder}' is not a finished hf-transfer run (no metrics.json/config.json); "
                          "finish training before pushing.")
    holder = lock_holder(folder)
    if holder is not None and not holds_claim(folder):
        raise OutputError(f"'{folder}' is being written by an hf-transfer run (pid {holder['pid']} on "
                          f"{holder['host']}); push it once that run has ended.")


def push_folder(folder: str | Path, repo_id: str, private: bool = False, commit_message: str | None = None, *,
                revision: str | None = None, create_pr: bool = False, include_subruns: bool = False) -> str:
    """Create ``repo_id`` if needed and upload the finished model folder; returns the commit (or PR) URL.

    ``private``: create the repo private (an existing repo keeps its visibility). ``revision``: the branch to
    commit to, created from ``main`` if it does not exist (with ``create_pr``: the existing branch the pull request
    targets). ``create_pr``: open a pull request instead of committing (needs no write access to the repo). ``include_subruns``: also upload the
    sub-runs (``folds/``, ``stages/``, ``learning_curve/``, ``modalities/``, ``scratch/``, ``source_only/``).
    Checkpoints, the ownership marker, the lock and hidden folders are never uploaded (see ``files_to_upload``).
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    folder = Path(folder)
    check_repo_id(repo_id, "repo_id")
    if revision is not None and not revision.strip():
        raise OutputError("--revision is empty: name a branch, e.g. --revision main.")
    _check_folder(folder)
    where = repo_id + (f" (branch {revision})" if revision else "")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        if revision and revision != "main" and not create_pr:  # a pull request needs no write access: no branch
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   revision=revision, create_pr=create_pr or None,
                                   ignore_patterns=ignore_patterns(include_subruns),
                                   commit_message=commit_message or DEFAULT_COMMIT_MESSAGE)
    except OfflineModeIsEnabled:
        raise HubError(f"Cannot push '{folder}' to '{where}': HF_HUB_OFFLINE is set. Unset it (and "
                       "TRANSFORMERS_OFFLINE) on a machine that reaches the Hub, then run `hf-transfer push` "
                       "again.") from None
    except (*_network_errors(), ValueError) as error:
        raise HubError(f"Pushing '{folder}' to '{where}' failed ({_short(error)}); {LOGIN_HINT}, check "
                       "the repo id and your network, then run `hf-transfer push` again.") from None
    url = getattr(commit, "pr_url", None) if create_pr else None
    url = url or getattr(commit, "commit_url", None) or str(commit)
    logger.info("Pushed %s to https://huggingface.co/%s%s", folder, repo_id,
                " as a pull request" if create_pr else (f" (branch {revision})" if revision else ""))
    return str(url)
