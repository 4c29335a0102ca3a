"""Hub upload up to the client call: the token only from the environment and checked
before any work, the repo private by default, the hub's refusals as one clear message.
The hub client (``huggingface_hub.HfApi``) is replaced; the upload itself is untested."""
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from huggingface_hub.errors import HfHubHTTPError

from qed_lightning.callbacks.export import HFExportCallback
from qed_lightning.cli import main
from qed_lightning.hub.push import HubPushError, prepare_repo, push_export

TOKEN = "hf_canary_secret_0123456789"


def refusal(status):
    request = httpx.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx.Response(status, request=request))


class FakeApi:
    """``HfApi`` stand-in: records calls; ``fail`` maps a method to the error it raises."""

    calls: list = []
    fail: dict = {}

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", self.token, repo_id, kw))
        if "create_repo" in FakeApi.fail:
            raise FakeApi.fail["create_repo"]
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, **kw):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        FakeApi.calls.append(("upload_folder", self.token, repo_id, files))
        if "upload_folder" in FakeApi.fail:
            raise FakeApi.fail["upload_folder"]
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/1")


@pytest.fixture
def hub(monkeypatch):
    FakeApi.calls, FakeApi.fail = [], {}
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    return FakeApi


def test_push_to_hub_without_a_token_fails_before_any_work(tmp_path, monkeypatch, capsys, hub):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    checkpoint = tmp_path / "missing.ckpt"  # never read: the token check comes first
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(checkpoint), str(tmp_path / "out"), "--push_to_hub", "someone/model"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "HF_TOKEN" in err and "missing.ckpt" not in err
    assert not (tmp_path / "out").exists() and hub.calls == []
    # the end-of-fit upload refuses at fit start, before the first step
    trainer = SimpleNamespace(is_global_zero=True)
    with pytest.raises(HubPushError, match="HF_TOKEN"):
        HFExportCallback(push_to_hub="someone/model").setup(trainer, None, "fit")
    HFExportCallback().setup(trainer, None, "fit")  # no push: no token needed
    assert hub.calls == []


def test_the_repo_is_created_private_with_the_environment_token(monkeypatch, hub):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    HFExportCallback(push_to_hub="someone/model").setup(SimpleNamespace(is_global_zero=True), None, "fit")
    assert hub.calls == [("create_repo", TOKEN, "someone/model",
                          {"private": True, "exist_ok": True, "repo_type": "model"})]
    with pytest.raises(HubPushError, match="not a hub repo id"):
        prepare_repo("no owner", token=TOKEN)


def test_an_unwritable_repo_is_one_clear_message_without_the_token(tmp_path, monkeypatch, hub):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.fail["create_repo"] = refusal(403)
    with pytest.raises(HubPushError) as err:
        prepare_repo("someone-else/model")
    message = str(err.value)
    assert "'someone-else/model'" in message and "HF_TOKEN" in message and "cannot write" in message
    assert TOKEN not in message
    (tmp_path / "config.json").write_text("{}")
    hub.fail = {"upload_folder": refusal(401)}
    with pytest.raises(HubPushError, match="could not upload to 'someone/model'.*HTTP 401"):
        push_export(tmp_path, "someone/model")
    assert [c[0] for c in hub.calls] == ["create_repo", "create_repo", "upload_folder"]
    with pytest.raises(HubPushError, match="not a Hugging Face export"):
        push_export(tmp_path / "nothing", "someone/model")


def test_qed_data_push_checks_the_token_first_and_uploads_the_folder_private(tmp_path, monkeypatch, hub):
    """A ``qed data`` step with push_to_hub: no token -> an error naming HF_TOKEN before
    anything is read or written; with one -> a private dataset repo, then the folder
    (data, card, summary)."""
    import json

    from qed_lightning.data_pipeline.decontaminate import Against, decontaminate

    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "b1", "problem": "Prove that the square of an odd integer is odd."}) + "\n")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "t1", "problem": "Show that every prime above 3 is 1 or 5 mod 6."}) + "\n")
    out = tmp_path / "out"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubPushError, match="HF_TOKEN"):
        decontaminate(str(train), str(out), [Against("mine", str(bench), benchmark="custom")], id_column="id",
                      push_to_hub="someone/data")
    assert not out.exists() and hub.calls == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    decontaminate(str(train), str(out), [Against("mine", str(bench), benchmark="custom")], id_column="id",
                  push_to_hub="someone/data")
    (create, token, repo, kw), (upload, _, _, files) = hub.calls
    assert (create, token, repo) == ("create_repo", TOKEN, "someone/data")
    assert kw["private"] is True and kw["repo_type"] == "dataset"
    assert upload == "upload_folder" and {"README.md", "summary.json", "train.jsonl"} <= set(files)
