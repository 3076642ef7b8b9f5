"""The loopback fake Hub round-trips the real clients: huggingface_hub, datasets, timm.

Each test drives the installed client libraries over HTTP against ``tests/fakes/hub_server.py``
and checks bytes, revisions, error classes and fault handling from the client side.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import httpx2
import numpy as np
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from PIL import Image

from tests.fakes.hub_server import FakeHub


def _make_folder(root: Path, seed: int) -> dict[str, bytes]:
    """A small model-like folder: a text config, a binary (LFS) weight file, a nested text file."""
    rng = np.random.default_rng(seed)
    files = {
        "config.json": json.dumps({"seed": seed, "label_names": ["real", "fake"]}).encode(),
        "model.safetensors": rng.bytes(4096),
        "extra/notes.txt": f"notes {seed}\n".encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_folder_then_download_round_trips_bytes(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    repo_url = api.create_repo("org/detector", private=True)
    assert repo_url.repo_id == "org/detector" and repo_url.startswith(hub.url)
    files = _make_folder(tmp_path / "src", seed=1)
    commit = api.upload_folder(folder_path=tmp_path / "src", repo_id="org/detector", commit_message="add model")

    assert commit.oid == hub.head("org/detector")
    for rel, data in files.items():
        path = Path(hf_hub_download("org/detector", rel))
        assert path.read_bytes() == data
        assert str(tmp_path) in str(path)  # per-test cache, not shared with other tests
    snapshot = Path(snapshot_download("org/detector"))
    assert snapshot.name == commit.oid
    downloaded = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    assert downloaded == {**files, ".gitattributes": hub.read_file("org/detector", ".gitattributes")}

    info = api.model_info("org/detector", files_metadata=True)
    assert info.sha == commit.oid and info.private is True
    siblings = {s.rfilename: s for s in info.siblings}
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(files["config.json"])
    assert sorted(api.list_repo_files("org/detector")) == sorted([*files, ".gitattributes"])
    tree = {entry.path: entry for entry in api.list_repo_tree("org/detector", recursive=True)}
    assert set(tree) == {*files, ".gitattributes", "extra"}
    assert tree["model.safetensors"].size == 4096
    assert api.repo_exists("org/detector") and not api.repo_exists("org/missing")
    assert api.file_exists("org/detector", "extra/notes.txt")
    assert not api.file_exists("org/detector", "extra/absent.txt")


def test_file_metadata_headers_and_range_requests(hub: FakeHub) -> None:
    weights, text = os.urandom(3000), b'{"a": 1}'
    sha = hub.commit_files("org/m", {"model.safetensors": weights, "config.json": text})

    lfs_meta = get_hf_file_metadata(hf_hub_url("org/m", "model.safetensors"))
    assert (lfs_meta.commit_hash, lfs_meta.etag, lfs_meta.size) == (sha, hashlib.sha256(weights).hexdigest(), 3000)
    git_oid = hashlib.sha1(b"blob %d\0" % len(text) + text).hexdigest()
    assert get_hf_file_metadata(hf_hub_url("org/m", "config.json")).etag == git_oid

    url = hf_hub_url("org/m", "model.safetensors")
    auth = {"Authorization": f"Bearer {hub.token}"}
    partial = httpx2.get(url, headers={**auth, "Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == weights[10:20]
    assert partial.headers["Content-Range"] == "bytes 10-19/3000"
    assert httpx2.get(url, headers={**auth, "Range": "bytes=-5"}).content == weights[-5:]
    assert httpx2.get(url, headers={**auth, "Range": "bytes=5000-"}).status_code == 416
    with HfFileSystem().open("org/m/model.safetensors", "rb") as handle:  # fsspec reads by ranges
        handle.seek(2990)
        assert handle.read() == weights[2990:]


def test_old_revision_by_sha_survives_new_commits(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo("org/m")
    first = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="weights.txt", repo_id="org/m")
    second = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="weights.txt", repo_id="org/m")
    assert first.oid != second.oid

    assert Path(hf_hub_download("org/m", "weights.txt")).read_bytes() == b"version 2"
    assert Path(hf_hub_download("org/m", "weights.txt", revision=first.oid)).read_bytes() == b"version 1"
    old = Path(snapshot_download("org/m", revision=first.oid, local_dir=tmp_path / "old"))
    assert (old / "weights.txt").read_bytes() == b"version 1"
    assert api.model_info("org/m", revision=first.oid).sha == first.oid
    assert api.model_info("org/m", revision=first.oid[:12]).sha == first.oid  # short shas resolve too
    assert [c.commit_id for c in api.list_repo_commits("org/m")][:2] == [second.oid, first.oid]


def test_missing_repo_revision_and_file_raise_the_matching_errors(hub: FakeHub, monkeypatch) -> None:
    hub.commit_files("org/m", {"config.json": b"{}"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/absent", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/absent")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/m", "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info("org/m", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/m", "absent.json")
    with pytest.raises(EntryNotFoundError):
        HfApi().list_repo_tree("org/m", path_in_repo="no/such/folder").__next__()
    # Datasets are a separate namespace from models.
    with pytest.raises(RepositoryNotFoundError):
        HfApi().dataset_info("org/m")

    hub.create_repo("org/private", private=True)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        HfApi().model_info("org/private")
    assert anonymous.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as wrong_token:
        HfApi(token="hf_wrong").model_info("org/m")
    assert wrong_token.value.response.status_code == 401


def test_create_repo_conflicts_unless_exist_ok_and_writes_need_a_token(hub: FakeHub, monkeypatch) -> None:
    api = HfApi()
    api.create_repo("org/ds", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("org/ds", repo_type="dataset")
    assert conflict.value.response.status_code == 409
    assert api.create_repo("org/ds", repo_type="dataset", exist_ok=True).repo_id == "org/ds"
    api.create_repo("org/ds")  # a model repo of the same name is a different repo
    assert api.whoami()["name"] == "fake-user"

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/ds")
    assert anonymous.value.response.status_code == 401


def test_token_goes_only_to_hub_api_and_never_into_paths_or_bodies(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo("org/m")
    _make_folder(tmp_path / "src", seed=2)
    api.upload_folder(folder_path=tmp_path / "src", repo_id="org/m")
    snapshot_download("org/m")

    assert hub.requests
    bearer = f"Bearer {hub.token}"
    for request in hub.requests:
        is_storage = request.path.startswith("/__fake_lfs__/")  # stands in for S3: no Hub credentials
        assert request.authorization == (None if is_storage else bearer), request.path
        assert hub.token not in request.path + request.query
        assert hub.token.encode() not in request.body
    stored = hub.list_files("org/m")
    assert all(hub.token.encode() not in data for data in stored.values())


def test_commit_is_atomic_and_stale_parent_is_rejected(hub: FakeHub) -> None:
    api = HfApi()
    before = hub.commit_files("org/m", {"keep.txt": b"kept"})
    with pytest.raises(EntryNotFoundError):
        api.create_commit("org/m", commit_message="half", operations=[
            CommitOperationAdd("new.txt", b"should not land"),
            CommitOperationDelete("never-existed.txt"),
        ])
    assert hub.head("org/m") == before
    assert "new.txt" not in hub.list_files("org/m")

    hub.commit_files("org/m", {"other.txt": b"moved on"})
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit("org/m", commit_message="late", parent_commit=before,
                          operations=[CommitOperationAdd("late.txt", b"late")])
    assert stale.value.response.status_code == 412


def test_injected_failure_mid_push_keeps_previous_revision_and_retry_works(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo("org/m")
    _make_folder(tmp_path / "v1", seed=1)
    first = api.upload_folder(folder_path=tmp_path / "v1", repo_id="org/m")
    v2 = _make_folder(tmp_path / "v2", seed=2)

    # The commit POST fails after the LFS upload already went through.
    commit_fault = hub.fail_next("POST", r"/api/models/org/m/commit/", status=500)
    with pytest.raises(HfHubHTTPError):
        api.upload_folder(folder_path=tmp_path / "v2", repo_id="org/m")
    assert commit_fault.hits == 1
    # The upload itself (S3 PUT) fails: 403 is not retried by the client.
    put_fault = hub.fail_next("PUT", r"^/__fake_lfs__/", status=403)
    hub.repos[("model", "org/m")].lfs_objects.clear()  # force the weights to be uploaded again
    with pytest.raises(RuntimeError, match="Error while uploading") as upload_error:
        api.upload_folder(folder_path=tmp_path / "v2", repo_id="org/m")
    assert isinstance(upload_error.value.__cause__, HfHubHTTPError)
    assert put_fault.hits == 1

    assert hub.head("org/m") == first.oid
    assert Path(hf_hub_download("org/m", "config.json")).read_bytes() == (tmp_path / "v1/config.json").read_bytes()

    retry = api.upload_folder(folder_path=tmp_path / "v2", repo_id="org/m")
    assert hub.list_files("org/m", revision=retry.oid) == {**v2, ".gitattributes": hub.read_file("org/m", ".gitattributes")}
    assert hub.read_file("org/m", "model.safetensors", revision=first.oid) == (tmp_path / "v1/model.safetensors").read_bytes()


def test_transient_server_errors_are_retried_by_the_client(hub: FakeHub, instant_hub_retries: list[float],
                                                           tmp_path: Path) -> None:
    HfApi().create_repo("org/m")
    files = _make_folder(tmp_path / "src", seed=3)
    put_fault = hub.fail_next("PUT", r"^/__fake_lfs__/", status=503, count=2)
    HfApi().upload_folder(folder_path=tmp_path / "src", repo_id="org/m")
    assert put_fault.hits == 2 and instant_hub_retries == [1, 2]
    assert hub.read_file("org/m", "model.safetensors") == files["model.safetensors"]


def test_offline_hub_refuses_connections_then_comes_back(hub: FakeHub, instant_hub_retries: list[float]) -> None:
    hub.commit_files("org/m", {"config.json": b'{"cached": true}'})
    cached = Path(hf_hub_download("org/m", "config.json"))
    with hub.offline():
        with pytest.raises(httpx2.ConnectError):
            HfApi().model_info("org/m")
        with pytest.raises(LocalEntryNotFoundError) as not_cached:
            hf_hub_download("org/m", "never-downloaded.json")
        assert isinstance(not_cached.value.__cause__, httpx2.ConnectError)
        assert len(instant_hub_retries) == 5  # the client retried a refused connection with back-off
        # The real client falls back to its cache when the Hub is unreachable.
        assert Path(hf_hub_download("org/m", "config.json")) == cached
    assert HfApi().model_info("org/m").sha == hub.head("org/m")


def test_readme_with_broken_yaml_is_rejected_before_upload(hub: FakeHub) -> None:
    HfApi().create_repo("org/m")
    with pytest.raises(ValueError, match="Invalid metadata"):
        HfApi().upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md",
                            repo_id="org/m")
    assert "README.md" not in hub.list_files("org/m")
    # Chunked request bodies (no Content-Length) are read too.
    response = httpx2.post(f"{hub.url}/api/validate-yaml",
                           content=iter([b'{"content": "---\\nlicense: mit\\n---\\n", ', b'"repoType": "model"}']))
    assert response.status_code == 200 and response.json()["errors"] == []


def test_datasetdict_push_to_hub_then_load_dataset_normal_and_streaming(hub: FakeHub) -> None:
    import datasets
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset

    features = Features({"image": datasets.Image(), "label": ClassLabel(names=["real", "fake"]),
                         "source": Value("string")})

    def split(n: int, offset: int) -> Dataset:
        return Dataset.from_dict({"image": [{"bytes": _png(offset + i), "path": None} for i in range(n)],
                                  "label": [i % 2 for i in range(n)],
                                  "source": [f"gen-{offset + i}" for i in range(n)]}, features=features)

    pushed = DatasetDict(train=split(4, 0), validation=split(3, 100))
    pushed.push_to_hub("org/faces", private=True)
    assert hub.repos[("dataset", "org/faces")].private
    assert any(path.endswith(".parquet") for path in hub.list_files("org/faces", repo_type="dataset"))

    def rows(dataset) -> list[tuple]:
        raw = dataset.cast_column("image", datasets.Image(decode=False))
        return [(row["image"]["bytes"], row["label"], row["source"]) for row in raw]

    loaded = load_dataset("org/faces")
    streamed = load_dataset("org/faces", streaming=True)
    for name in ("train", "validation"):
        assert loaded[name].features == features
        assert rows(loaded[name]) == rows(pushed[name])
        assert rows(streamed[name]) == rows(pushed[name])
    assert loaded["train"].features["label"].names == ["real", "fake"]
    assert not hub.unhandled


def test_timm_push_to_hf_hub_then_create_model_from_hub(hub: FakeHub) -> None:
    import timm
    import torch
    from timm.models import push_to_hf_hub

    model = timm.create_model("test_resnet", num_classes=2)
    push_to_hf_hub(model, "org/timm-det", model_config={"label_names": ["real", "fake"]},
                   safe_serialization=True)
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.list_files("org/timm-det"))

    loaded = timm.create_model("hf-hub:org/timm-det", pretrained=True)
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    config = json.loads(Path(hf_hub_download("org/timm-det", "config.json")).read_text())
    assert config["label_names"] == ["real", "fake"]
    # What transformers' from_pretrained fetches comes through hf_hub_download the same way.
    weights = Path(hf_hub_download("org/timm-det", "model.safetensors")).read_bytes()
    assert weights == hub.read_file("org/timm-det", "model.safetensors")
    assert not hub.unhandled
