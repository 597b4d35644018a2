"""push: uploads a finished folder (never checkpoints or the scratch baseline) and refuses unfinished ones."""

from __future__ import annotations

import pytest

from hf_transfer.errors import OutputError
from hf_transfer.hub import files_to_upload, push_folder


class RecordingApi:
    calls: list[tuple[str, dict]] = []
    identity: dict = {"name": "me", "auth": {"accessToken": {"role": "write"}}}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        pr = f"https://huggingface.co/{kwargs['repo_id']}/discussions/1" if kwargs.get("create_pr") else None
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc",
                                   "pr_url": pr})()

    def whoami(self, *args, **kwargs):
        self.calls.append(("whoami", {}))
        return self.identity


@pytest.fixture
def api(monkeypatch):
    import huggingface_hub

    RecordingApi.calls = []
    RecordingApi.identity = {"name": "me", "auth": {"accessToken": {"role": "write"}}}
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


def finished(tmp_path):
    for name in ("config.json", "metrics.json", "model.safetensors", "README.md"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    return tmp_path


def test_push_uploads_the_model_folder_only(tmp_path, api):
    url = push_folder(finished(tmp_path), "me/model", private=True)
    assert url == "https://huggingface.co/me/model/commit/abc"
    (_, create), (_, upload) = api.calls
    assert create == {"repo_id": "me/model", "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["folder_path"] == str(tmp_path) and upload["repo_id"] == "me/model"
    assert {"checkpoints/*", "scratch/*"} <= set(upload["ignore_patterns"])
    assert "token" not in upload  # the token comes from the environment or login cache, never from us


def test_push_refuses_an_unfinished_run(tmp_path, api):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OutputError, match="not a finished hf-transfer run"):
        push_folder(tmp_path, "me/model")
    assert api.calls == []


def test_push_failure_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    class Offline(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    with pytest.raises(OutputError, match="hf auth login.*HF_TOKEN"):
        push_folder(finished(tmp_path), "me/model")


# --- what is uploaded: the run's own model by default, sub-runs on request, never state or hidden files

RUN_FILES = ["config.json", "metrics.json", "model.safetensors", "README.md", "recipe.yaml", "confusion_matrix.png",
             "learning_curve.png", "stages.yaml", "logs/events.out.tfevents.1", "adapter/adapter_model.safetensors"]
SUBRUN_FILES = ["folds/fold-0/config.json", "folds/fold-0/metrics.json", "folds/fold-0/model.safetensors",
                "folds/fold-0/README.md", "folds/fold-0/scratch/model.safetensors",
                "stages/one/model.safetensors", "stages/one/config.json",
                "learning_curve/0.25/pretrained/model.safetensors", "learning_curve/0.25/scratch/model.safetensors",
                "modalities/image-only/model.safetensors", "scratch/model.safetensors", "scratch/metrics.json"]
NEVER_FILES = [".hf_transfer_run.json", ".hf_transfer.lock", ".previous/model.safetensors", ".previous/metrics.json",
               ".next/config.json", ".staging/model.safetensors", ".metrics.json.a1b2c3d4",
               "checkpoints/checkpoint-10/model.safetensors", "checkpoints/checkpoint-10/trainer_state.json",
               "folds/fold-0/.hf_transfer_run.json", "folds/fold-0/checkpoints/checkpoint-1/model.safetensors",
               "folds/fold-0/.staging/model.safetensors", "stages/one/.hf_transfer_run.json",
               "stages/two-initial-weights/model.safetensors", "scratch/checkpoints/checkpoint-3/model.safetensors",
               "scratch/.hf_transfer_run.json", "learning_curve/0.25/pretrained/.previous/model.safetensors"]


def cross_validated_run(root):
    """A finished run with every kind of sub-run, checkpoints and hidden state next to its own model."""
    for name in RUN_FILES + SUBRUN_FILES + NEVER_FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return root


def uploaded(folder, upload):
    """The files ``upload_folder`` would send with the patterns it was given, listed the way huggingface_hub does."""
    from huggingface_hub.utils import filter_repo_objects

    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    return sorted(filter_repo_objects(files, allow_patterns=upload.get("allow_patterns"),
                                      ignore_patterns=upload.get("ignore_patterns")))


@pytest.mark.parametrize("include_subruns", [False, True])
def test_push_uploads_the_runs_own_model_and_subruns_only_on_request(tmp_path, api, include_subruns):
    folder = cross_validated_run(tmp_path)
    push_folder(folder, "me/model", include_subruns=include_subruns)
    (_, upload), = [call for call in api.calls if call[0] == "upload_folder"]
    expected = sorted(RUN_FILES + (SUBRUN_FILES if include_subruns else []))
    assert uploaded(folder, upload) == expected
    assert files_to_upload(folder, include_subruns=include_subruns) == expected


def test_push_options_reach_the_hub_client(tmp_path, api):
    url = push_folder(finished(tmp_path), "me/model", commit_message="Add fold results", revision="experiment-2")
    assert url == "https://huggingface.co/me/model/commit/abc"
    (_, create), (_, branch), (_, upload) = api.calls
    assert create["private"] is None  # the namespace's default visibility unless --private
    assert branch == {"repo_id": "me/model", "branch": "experiment-2", "repo_type": "model", "exist_ok": True}
    assert upload["revision"] == "experiment-2" and not upload["create_pr"]
    assert upload["commit_message"] == "Add fold results"
    api.calls.clear()
    url = push_folder(tmp_path, "someone/model", revision="dev", create_pr=True)
    assert url == "https://huggingface.co/someone/model/discussions/1"
    (_, create), (_, upload) = api.calls  # a pull request needs no write access, so no branch is created
    assert upload["revision"] == "dev" and upload["create_pr"] is True
    api.calls.clear()
    push_folder(tmp_path, "me/model", revision="main")
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]  # main exists: no branch to create


def test_python_push_passes_the_options(tmp_path, api):
    import hf_transfer

    url = hf_transfer.push(cross_validated_run(tmp_path), "me/model", private=True, revision="v2",
                           commit_message="msg", include_subruns=True)
    assert url == "https://huggingface.co/me/model/commit/abc"
    (_, create), _, (_, upload) = api.calls
    assert create["private"] is True and upload["revision"] == "v2" and upload["commit_message"] == "msg"
    assert "folds/fold-0/model.safetensors" in uploaded(tmp_path, upload)


def test_push_refuses_a_folder_a_run_is_writing(tmp_path, api):
    import json
    import os
    import socket

    folder = finished(tmp_path)
    (folder / ".hf_transfer.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(OutputError, match="being written by an hf-transfer run"):
        push_folder(folder, "me/model")
    assert api.calls == []


# --- network failures: one HubError (an OutputError), one `error:` line with exit code 2 in the CLI


def client_connect_error():
    """The HTTP client's ConnectError (httpx, or the fork huggingface_hub is built on)."""
    import importlib

    from huggingface_hub.errors import HTTPError

    return importlib.import_module(HTTPError.__module__.split(".")[0]).ConnectError("[Errno 111] Connection refused")


class RequestsConnectionError(OSError):
    """What ``requests.ConnectionError`` is: a ``RequestException``, itself an ``IOError``."""


def hub_http_error():
    import importlib

    from huggingface_hub.errors import HTTPError, HfHubHTTPError

    client = importlib.import_module(HTTPError.__module__.split(".")[0])
    request = client.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError("403 Forbidden: you don't have the rights to create a model under this namespace",
                          response=client.Response(403, request=request))


def offline_error():
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")


NETWORK_FAILURES = {"connect": (client_connect_error, "Connection refused"),
                    "requests": (lambda: RequestsConnectionError("Max retries exceeded"), "Max retries exceeded"),
                    "http": (hub_http_error, "403 Forbidden"),
                    "offline": (offline_error, "HF_HUB_OFFLINE is set")}


@pytest.fixture(params=list(NETWORK_FAILURES))
def failing_api(request, monkeypatch):
    import huggingface_hub

    make, words = NETWORK_FAILURES[request.param]

    class Failing(RecordingApi):
        def upload_folder(self, **kwargs):
            raise make()

    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", Failing)
    return words


def test_network_failures_are_hub_errors(tmp_path, failing_api):
    from hf_transfer.errors import HubError

    with pytest.raises(HubError, match=failing_api) as raised:
        push_folder(finished(tmp_path), "me/model")
    assert isinstance(raised.value, OutputError) and "\n" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_network_failures_are_one_error_line_in_the_cli(tmp_path, failing_api, capsys):
    from hf_transfer.cli import EXIT_USER_ERROR, run_cli

    code = run_cli(["push", str(finished(tmp_path)), "me/model", "--revision", "main"])
    captured = capsys.readouterr()
    assert code == EXIT_USER_ERROR
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and failing_api in errors[0] and "Traceback" not in captured.err


# --- the pre-flight check of output.push_to_hub


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_check_push_target_uses_huggingface_hubs_validator(monkeypatch, online, api):
    import huggingface_hub.utils

    from hf_transfer.hub import check_push_target

    seen = []
    validate = huggingface_hub.utils.validate_repo_id
    monkeypatch.setattr(huggingface_hub.utils, "validate_repo_id", lambda repo_id: seen.append(repo_id) or
                        validate(repo_id))
    check_push_target("me/model", push=True)
    assert seen == ["me/model"] and [name for name, _ in api.calls] == ["whoami"]


def test_check_push_target_needs_write_access_to_the_namespace(online, api):
    from hf_transfer.errors import HubError
    from hf_transfer.hub import check_push_target

    RecordingApi.identity = {"name": "me", "orgs": [{"name": "my-lab"}], "auth": {"accessToken": {"role": "write"}}}
    check_push_target("me/model", push=True)
    check_push_target("my-lab/model", push=True)
    check_push_target("model", push=True)  # no namespace: the user's own
    with pytest.raises(HubError, match="namespace 'someone-else'.*'me'.*'my-lab'.*me/model"):
        check_push_target("someone-else/model", push=True)


def test_check_push_target_offline_says_so_in_one_line_and_goes_on(caplog, api, monkeypatch):
    import logging

    from huggingface_hub import constants

    from hf_transfer.hub import check_push_target

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with caplog.at_level(logging.WARNING, logger="hf_transfer.hub"):
        check_push_target("me/model", push=True)
    assert api.calls == []
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "could not be checked" in record.getMessage()
