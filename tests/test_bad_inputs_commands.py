"""Bad input to the other commands (rank, evaluate, push) and to the Hub repo id, through the real CLI.

Same contract as ``test_bad_inputs.py``: exit code 2, one ``error:`` line naming the flag or field with a way
to fix it, no traceback, and nothing written (the output path and folder stay exactly as they were).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_transfer.cli import EXIT_USER_ERROR, run_cli
from hf_transfer.errors import OutputError
from hf_transfer.hub import check_push_target
from test_bad_inputs import REPO, Case, Models, one_error, run_case, snapshot, text_recipe

BAD_REPO_IDS = ["my model", "a/b/c", "-x/y", "me/" + "m" * 100, "me/model--v2", "me/model.git"]


@pytest.fixture(scope="module")
def models(tiny_bert_dir, tiny_timm_dir) -> Models:
    return Models(bert=tiny_bert_dir, timm=tiny_timm_dir)


@pytest.fixture(scope="module")
def finished_run(models, tmp_path_factory) -> Path:
    """A finished tiny text run: a real model folder for evaluate and push."""
    root = tmp_path_factory.mktemp("finished")
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(text_recipe(root, models)), encoding="utf-8")
    assert run_cli(["finetune", str(path)]) == 0
    return root / "out"


class HubApi:
    """A stand-in for ``huggingface_hub.HfApi`` that records calls and raises ``error`` from each of them."""

    calls: list[str] = []
    error: BaseException | None = None
    identity: dict = {"name": "me", "auth": {"accessToken": {"role": "write"}}}

    def _call(self, name: str):
        HubApi.calls.append(name)
        if HubApi.error is not None:
            raise HubApi.error

    def whoami(self, *args, **kwargs) -> dict:
        self._call("whoami")
        return HubApi.identity

    def create_repo(self, repo_id, **kwargs) -> None:
        self._call("create_repo")

    def upload_folder(self, **kwargs):
        self._call("upload_folder")
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


@pytest.fixture
def hub(monkeypatch) -> type[HubApi]:
    """A mocked Hub, reachable (offline mode off) unless a test turns it on."""
    import huggingface_hub
    from huggingface_hub import constants

    HubApi.calls, HubApi.error = [], None
    HubApi.identity = {"name": "me", "auth": {"accessToken": {"role": "write"}}}
    monkeypatch.setattr(huggingface_hub, "HfApi", HubApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return HubApi


def http_error(status: int, message: str):
    """A real ``HfHubHTTPError`` as ``hf_raise_for_status`` builds it, multi-line message included."""
    from huggingface_hub.errors import HTTPError, HfHubHTTPError

    client = importlib.import_module(HTTPError.__module__.split(".")[0])  # httpx (or its fork) under huggingface_hub
    request = client.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(message, response=client.Response(status, request=request))


def connect_error():
    from huggingface_hub.errors import HTTPError

    client = importlib.import_module(HTTPError.__module__.split(".")[0])
    return client.ConnectError("[Errno -2] Name or service not known")


# --- 1. rank --output


@pytest.mark.parametrize("where", ["existing_file", "below_a_file"])
def test_rank_output_that_is_not_a_folder_is_one_error(where, models, image_folder_data, tmp_path, capsys):
    blocker = tmp_path / "taken.txt"
    blocker.write_text("my notes")
    output = blocker if where == "existing_file" else blocker / "ranking"
    code = run_cli(["rank", "--data", str(image_folder_data), "--candidates", str(models.timm),
                    "--output", str(output)])
    one_error(capsys, code, "--output", "taken.txt", "is a file", "not a folder")
    assert snapshot(tmp_path) == {"taken.txt": b"my notes"}


# --- 2. evaluate --batch-size


@pytest.mark.parametrize("size", ["0", "-4"])
def test_evaluate_batch_size_below_one_is_one_error(size, finished_run, text_csv_data, tmp_path, capsys):
    before = snapshot(finished_run)
    code = run_cli(["evaluate", str(finished_run), "--data", str(text_csv_data), "--batch-size", size,
                    "--output", str(tmp_path / "report.json")])
    one_error(capsys, code, "--batch-size", "at least 1", f"got {size}")
    assert snapshot(tmp_path) == {} and snapshot(finished_run) == before


# --- 3. evaluate --output


@pytest.mark.parametrize("where", ["existing_folder", "below_a_file"])
def test_evaluate_output_is_checked_before_evaluating(where, finished_run, text_csv_data, tmp_path, capsys,
                                                      monkeypatch):
    (tmp_path / "reports").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    output = tmp_path / "reports" if where == "existing_folder" else tmp_path / "notes.txt" / "report.json"
    monkeypatch.setattr("hf_transfer.evaluation.evaluate.evaluate_model",
                        lambda *a, **k: pytest.fail("evaluated before checking --output"))
    before = snapshot(tmp_path)
    code = run_cli(["evaluate", str(finished_run), "--data", str(text_csv_data), "--output", str(output)])
    one_error(capsys, code, "--output", "is a folder" if where == "existing_folder" else "is a file")
    assert snapshot(tmp_path) == before  # no .report.json.XXXX temporary file either


def test_evaluate_writes_the_report_to_a_good_output(finished_run, text_csv_data, tmp_path, capsys):
    output = tmp_path / "new" / "report.json"
    assert run_cli(["evaluate", str(finished_run), "--data", str(text_csv_data), "--output", str(output)]) == 0
    assert "accuracy" in json.loads(output.read_text()) and [p.name for p in output.parent.iterdir()] == ["report.json"]


def test_a_failed_report_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from hf_transfer.evaluation.evaluate import write_report

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hf_transfer.training.outputs.os.replace", disk_full)
    with pytest.raises(OutputError, match="Cannot write --output .*No space left on device"):
        write_report(tmp_path / "report.json", "{}")
    assert list(tmp_path.iterdir()) == []


# --- 4. push: network errors


@pytest.mark.parametrize("failure, words", [
    (connect_error, ("Pushing", "Name or service not known", "check the repo id and your network")),
    (lambda: http_error(401, "401 Client Error: Unauthorized\n\nInvalid username or password."),
     ("401 Client Error", "Invalid username or password", "hf auth login")),
    (lambda: importlib.import_module("huggingface_hub.errors").OfflineModeIsEnabled("offline"),
     ("HF_HUB_OFFLINE is set", "Unset it")),
])
def test_push_network_failure_is_one_error(failure, words, hub, finished_run, capsys):
    hub.error = failure()
    before = snapshot(finished_run)
    one_error(capsys, run_cli(["push", str(finished_run), "me/model"]), *words)
    assert hub.calls == ["create_repo"] and snapshot(finished_run) == before


def test_push_with_the_real_client_offline_is_one_error(finished_run, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    one_error(capsys, run_cli(["push", str(finished_run), "me/model"]), "HF_HUB_OFFLINE is set", "me/model")


@pytest.mark.parametrize("offline", ["1", None])
def test_push_in_a_real_process_without_a_hub_is_one_error(offline, finished_run, tmp_path):
    """HF_HUB_OFFLINE=1, and unset with the Hub endpoint on a closed local port (the client's ConnectError)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_TOKEN": "hf_not_a_real_token",
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_HUB_OFFLINE", None), env.pop("TRANSFORMERS_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = offline
    process = subprocess.run([sys.executable, "-m", "hf_transfer.cli", "push", str(finished_run), "me/model"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert process.returncode == EXIT_USER_ERROR, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in process.stderr, process.stderr
    assert ("HF_HUB_OFFLINE is set" if offline else "check the repo id and your network") in errors[0]
    assert "hf_not_a_real_token" not in process.stderr


# --- 5. the Hub repo id, and the push pre-flight


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_push_refuses_an_invalid_repo_id_before_uploading(repo_id, hub, finished_run, capsys):
    error = one_error(capsys, run_cli(["push", str(finished_run), "--", repo_id]), "repo_id", "not a valid Hub repo id",
                      "user/model-name")
    assert len(error) < 300 and hub.calls == []


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_check_push_target_names_the_recipe_field(repo_id, hub):
    with pytest.raises(OutputError, match=r"'output.hub_model_id' = .* is not a valid Hub repo id"):
        check_push_target(repo_id, push=True)
    assert hub.calls == []


def test_check_push_target_does_nothing_without_push(hub):
    check_push_target("not valid at all", push=False)
    check_push_target(None, push=False)
    assert hub.calls == []


def test_check_push_target_needs_a_repo_id(hub):
    with pytest.raises(OutputError, match="'output.hub_model_id' is empty"):
        check_push_target(None, push=True)


def test_check_push_target_checks_the_token_when_online(hub):
    from huggingface_hub.errors import LocalTokenNotFoundError

    check_push_target("me/model", push=True)
    assert hub.calls == ["whoami"]
    hub.error = LocalTokenNotFoundError("Token is required to call the /whoami-v2 endpoint, but no token found.")
    with pytest.raises(OutputError, match="no token found.*hf auth login.*output.push_to_hub=false"):
        check_push_target("me/model", push=True)
    hub.error = http_error(401, "Invalid user token.")
    with pytest.raises(OutputError, match="Invalid user token"):
        check_push_target("me/model", push=True)
    hub.error = connect_error()
    with pytest.raises(OutputError, match="Name or service not known.*check your network"):
        check_push_target("me/model", push=True)
    hub.error, hub.identity = None, {"name": "me", "auth": {"accessToken": {"role": "read"}}}
    with pytest.raises(OutputError, match="read-only.*write access"):
        check_push_target("me/model", push=True)


def test_check_push_target_skips_the_token_offline(hub, monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with caplog.at_level(logging.WARNING, logger="hf_transfer.hub"):
        check_push_target("me/model", push=True)
    assert hub.calls == [] and "HF_HUB_OFFLINE is set" in caplog.text


def push_recipe(hub_model_id: str | None):
    def build(root: Path, models: Models) -> dict:
        return text_recipe(root, models, output={"dir": str(root / "out"), "push_to_hub": True,
                                                 "hub_model_id": hub_model_id})
    return build


RECIPE_CASES = [
    Case("push_without_hub_model_id", push_recipe(None), ("output.push_to_hub", "output.hub_model_id", "empty")),
    Case("push_to_invalid_hub_model_id", push_recipe("my model"),
         ("'output.hub_model_id' = 'my model'", "not a valid Hub repo id")),
]


@pytest.mark.parametrize("case", RECIPE_CASES, ids=["push_without_hub_model_id", "push_to_invalid_hub_model_id"])
def test_bad_push_recipe_is_one_clear_error(case: Case, models, tmp_path, capsys, hub):
    run_case("finetune", case, models, tmp_path, capsys)
    assert hub.calls == []
