"""``lfp-mech push``: the folder it uploads (policy + SAE-Lens hub layout + card), the one upload
call, and the errors when there is no login or no hub."""

import json

import pytest
import torch
import yaml

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.runner import push as push_module
from lfp_mech.runner.cli import main


@pytest.fixture(scope="module")
def pushed(tracked_smoke_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("push") / "repo"
    code = main(["push", str(tracked_smoke_run), "--repo-id", "me/lfp-smoke",
                 "--local-dir", str(folder)])  # fmt: skip
    assert code == 0
    return folder


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_local_dir_is_the_policy_and_the_saes_in_sae_lens_layout(pushed, tracked_smoke_run):
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM

    from lfp_mech import load_run

    run = load_run(tracked_smoke_run)
    files = _files(pushed)
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json",
            "pretrained_saes.yaml", "lfp_mech_run.json"} <= set(files)  # fmt: skip
    policy = AutoModelForCausalLM.from_pretrained(pushed)
    tuned = AutoModelForCausalLM.from_pretrained(run.rlhf.policy_dir)
    for name, value in tuned.state_dict().items():
        assert torch.equal(value, policy.state_dict()[name]), name
    entry = yaml.safe_load((pushed / "pretrained_saes.yaml").read_text())["lfp-smoke"]
    assert entry["repo_id"] == "me/lfp-smoke" and entry["model"] == "me/lfp-smoke"
    ids = [sae["id"] for sae in entry["saes"]]
    expected = [f"{hook}/{size}" for size in run.saes.sizes for hook in run.saes.hook_names]
    assert ids == expected and all(sae["path"] == sae["id"] for sae in entry["saes"])
    for size in run.saes.sizes:
        for hook, folder in run.saes.sae_dirs(size).items():
            assert sorted(p.name for p in (pushed / hook / size).iterdir()) == [
                "cfg.json", "sae_weights.safetensors"]  # fmt: skip
            loaded = SAE.load_from_disk(pushed / hook / size)
            original = SAE.load_from_disk(folder)
            assert loaded.cfg.metadata.hook_name == hook
            assert loaded.cfg.metadata.model_name == "me/lfp-smoke"
            assert torch.equal(loaded.W_dec, original.W_dec)
            assert torch.equal(loaded.W_enc, original.W_enc)
    card = (pushed / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "me/lfp-smoke" in card
    assert f'SAE.from_pretrained("me/lfp-smoke", "{expected[0]}")' in card
    assert json.loads((pushed / "lfp_mech_run.json").read_text())["config"]["model"] == "tiny-llama"


def test_saes_only_and_dry_run(tracked_smoke_run, tmp_path, capsys):
    folder = tmp_path / "saes_only"
    assert main(["push", str(tracked_smoke_run), "--repo-id", "me/x", "--what", "saes",
                 "--local-dir", str(folder)]) == 0  # fmt: skip
    files = _files(folder)
    assert "model.safetensors" not in files and "config.json" not in files
    assert any(f.endswith("/small/sae_weights.safetensors") for f in files)
    assert "library_name: saelens" in (folder / "README.md").read_text()
    capsys.readouterr()
    assert main(["push", str(tracked_smoke_run), "--repo-id", "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload to me/x" in out and "model.safetensors" in out
    assert main(["push", str(tracked_smoke_run), "--repo-id", "me/x", "--local-dir",
                 str(folder)]) == 2  # not empty  # fmt: skip
    assert main(["push", str(tracked_smoke_run), "--repo-id", "nope", "--dry-run"]) == 2
    assert main(["push", str(tracked_smoke_run), "--repo-id", "me/x", "--what", "probes",
                 "--dry-run"]) == 2  # fmt: skip


def test_upload_is_one_upload_folder_call_with_the_built_folder(
    tracked_smoke_run, pushed, monkeypatch
):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def whoami(self):
            return {"name": "me"}

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message):
            calls["upload"] = (repo_id, repo_type, commit_message)
            from pathlib import Path

            calls["files"] = _files(Path(folder_path))
            calls["card"] = (Path(folder_path) / "README.md").read_text()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    monkeypatch.setattr("lfp_mech.hub.hub_reachable", lambda timeout=3.0: True)
    url = push_module.push_run(tracked_smoke_run, "me/lfp-smoke", private=True)
    assert url == "https://huggingface.co/me/lfp-smoke"
    assert calls["create"] == ("me/lfp-smoke", {"private": True, "exist_ok": True,
                                                "repo_type": "model"})  # fmt: skip
    assert calls["upload"][:2] == ("me/lfp-smoke", "model")
    assert calls["files"] == _files(pushed)  # exactly what --local-dir writes
    assert calls["card"] == (pushed / "README.md").read_text()


def test_no_login_or_no_hub_fails_before_anything_is_built(tracked_smoke_run, monkeypatch):
    import huggingface_hub

    def never(*args, **kwargs):
        raise AssertionError("built or uploaded without hub access")

    monkeypatch.setattr(push_module, "build_push_folder", never)
    monkeypatch.setattr(push_module, "upload", never)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(LfpMechError, match="not logged in.*hf auth login"):
        push_module.push_run(tracked_smoke_run, "me/x")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    monkeypatch.setattr("lfp_mech.hub.hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(LfpMechError, match="not reachable.*--local-dir"):
        push_module.push_run(tracked_smoke_run, "me/x")
    with pytest.raises(ConfigError, match="USER/NAME"):
        push_module.push_run(tracked_smoke_run, "just-a-name")
