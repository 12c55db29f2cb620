"""Region features: computed once per (image content, extractor), cached, boxes inside the image."""
import os
import shutil

import pytest
import torch
from PIL import Image

from gpu_worker import UserFacingError
from gpu_worker import features as F
from gpu_worker.models.tiny import make_tiny_backbone


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A tiny random ResNet folder, named explicitly (the extractor records it as a test backbone)."""
    return make_tiny_backbone(str(tmp_path_factory.mktemp("backbone")))


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i, size in enumerate([(64, 64), (96, 48), (40, 80)]):
        im = Image.new("RGB", size, (20 * i, 100, 200))
        im.paste((255, 0, 0), (5, 5, 20, 25))
        p = tmp_path / f"img{i}.png"
        im.save(p)
        paths.append(str(p))
    return paths


def test_grid_features_boxes_and_cache_hit(images, tmp_path, backbone):
    ex = F.GridExtractor(backbone, grid=4, dim=24)
    cache = str(tmp_path / "cache")
    first = F.extract_features(images, ex, cache_dir=cache)
    assert F.extract_features.last_stats == {"hits": 0, "computed": 3}
    for path, res in zip(images, first):
        w, h = Image.open(path).size
        assert res["size"] == (w, h)
        assert res["features"].shape == (16, 24)
        b = res["boxes"]
        assert b.shape == (16, 4)
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w + 1e-4).all() and (b[:, 3] <= h + 1e-4).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        # the cells tile the whole image
        assert torch.isclose(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum(), torch.tensor(float(w * h)))
    second = F.extract_features(images, ex, cache_dir=cache)
    assert F.extract_features.last_stats == {"hits": 3, "computed": 0}
    for a, b in zip(first, second):
        assert torch.equal(a["features"], b["features"])
    # same content under another name -> still a cache hit (keyed by content hash)
    copy = str(tmp_path / "renamed.png")
    shutil.copyfile(images[1], copy)
    F.extract_features([copy], ex, cache_dir=cache)
    assert F.extract_features.last_stats["hits"] == 1


def test_cache_is_per_extractor_and_survives_a_torn_file(images, tmp_path, backbone):
    cache = str(tmp_path / "cache")
    a, b = F.GridExtractor(backbone, grid=2, dim=8), F.GridExtractor(backbone, grid=3, dim=8)
    assert a.id != b.id
    F.extract_features(images[:1], a, cache_dir=cache)
    F.extract_features(images[:1], b, cache_dir=cache)
    assert F.extract_features.last_stats["computed"] == 1
    cached = os.path.join(cache, a.id, F.file_sha256(images[0]) + ".pt")
    with open(cached, "wb") as fh:
        fh.write(b"torn")
    res = F.extract_features(images[:1], a, cache_dir=cache)
    assert F.extract_features.last_stats["computed"] == 1 and res[0]["features"].shape == (4, 8)


def test_extractor_save_load_roundtrip(images, tmp_path, backbone):
    ex = F.GridExtractor(backbone, grid=3, dim=40, seed=3)
    ex.save(str(tmp_path / "m"))
    back = F.load_extractor(str(tmp_path / "m"))
    assert back.id == ex.id
    assert torch.allclose(ex([Image.open(images[0])])[0]["features"], back([Image.open(images[0])])[0]["features"])


def test_fit_dim_pads_and_pools():
    x = torch.arange(12, dtype=torch.float).view(2, 6)
    assert F.fit_dim(x, 8).shape == (2, 8) and torch.equal(F.fit_dim(x, 8)[:, :6], x)
    pooled = F.fit_dim(x, 3)
    assert torch.allclose(pooled[0], torch.tensor([0.5, 2.5, 4.5]))


def test_detector_is_guarded():
    status = F.detector_status()
    assert set(status) == {"available", "reason", "weights"}
    if not status["available"]:
        assert status["reason"]
        with pytest.raises(RuntimeError, match="unavailable"):
            F.make_extractor("detector", dim=16)


def test_no_silent_random_backbone(tmp_path, monkeypatch):
    """Without pretrained weights the grid extractor refuses to start and says why (issue 11.2)."""
    monkeypatch.delenv("PIGGYBACK_FEATURE_BACKBONE", raising=False)
    monkeypatch.setattr(F, "default_backbone", lambda: None)
    with pytest.raises(UserFacingError, match="microsoft/resnet-50"):
        F.GridExtractor(None, grid=2, dim=8)
    with pytest.raises(UserFacingError, match="could not be loaded"):
        F.GridExtractor(str(tmp_path / "nothing-here"), grid=2, dim=8)
    assert F.backbone_status(None)["available"] is False
    assert "does not exist" in F.backbone_status(str(tmp_path / "gone"))["reason"]


def test_extractor_records_name_and_weights_with_the_features(images, tmp_path, backbone):
    ex = F.GridExtractor(backbone, grid=2, dim=8)
    info = ex.describe()
    assert info["weights"] == "random tiny test backbone (not pretrained)" and info["backbone"] == backbone
    assert info["name"] == "ResNet grid 2x2"
    cache = tmp_path / "cache"
    F.extract_features(images[:1], ex, cache_dir=str(cache))
    import json

    with open(cache / ex.id / F.EXTRACTOR_FILE, encoding="utf-8") as fh:
        assert json.load(fh) == info
