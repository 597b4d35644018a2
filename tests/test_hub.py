"""push: uploads a finished folder (never checkpoints or the scratch baseline) and refuses unfinished ones."""

from __future__ import annotations

import pytest

from hf_transfer.errors import OutputError
from hf_transfer.hub import push_folder


class RecordingApi:
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"})()


@pytest.fixture
def api(monkeypatch):
    import huggingface_hub

    RecordingApi.calls = []
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
