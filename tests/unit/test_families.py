"""Every transformers family end to end on a tiny random checkpoint (no hub access, no Django).

tiny checkpoint -> train_model (a few steps) -> load the saved folder -> predict with top-k and
confidence -> regions as pixel boxes -> overlay PNG -> save/load round trip gives the same answers.
"""
import os

import pytest
import torch
from PIL import Image

from gpu_worker.easyvqa import load_items
from gpu_worker.models import hf_common as hc
from gpu_worker.models.registry import availability, get_adapter_class, get_spec
from gpu_worker.models.tiny import FAMILIES, make_tiny_backbone, make_tiny_checkpoint

CASES = [("vilt", "vilt"), ("visualbert", "visualbert"), ("lxmert", "lxmert"), ("blip", "blip"),
         ("blip2", "blip2"), ("florence2", "florence2")]


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(2)
    items, root = load_items("train", max_images=4, seed=1)
    return items[:24], root


@pytest.mark.parametrize("family,key", CASES)
def test_family_end_to_end(family, key, data, tmp_path):
    from gpu_worker.predict import load_model, predict_batch
    from gpu_worker.train import train_model

    items, root = data
    ckpt = make_tiny_checkpoint(family, str(tmp_path / "tiny"))
    params = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "val_fraction": 0.25, "patience": 0,
              "warmup_ratio": 0.0, "feature_cache_dir": str(tmp_path / "features"), "num_beams": 2,
              "max_new_tokens": 4}
    if get_spec(key).needs_features:  # named explicitly: no extractor is ever substituted silently
        params["feature_backbone"] = make_tiny_backbone(str(tmp_path / "backbone"))
    result = train_model(key, items, root, str(tmp_path / "run"), params, source=ckpt, device="cpu")
    assert result["epochs_run"] == 1 and result["history"][0]["loss"] > 0
    model_dir = os.path.join(str(tmp_path / "run"), "model")
    assert os.path.isfile(os.path.join(model_dir, "config.json"))
    assert os.path.isfile(os.path.join(model_dir, "model.safetensors"))
    assert os.path.isfile(os.path.join(model_dir, "piggyback.json"))

    adapter = load_model(model_dir, device="cpu")
    assert adapter.spec.key == key
    sample = items[:3]
    preds = predict_batch(adapter, sample, root, top_k=3, explain=True, batch_size=2)
    assert len(preds) == len(sample)
    for it, p in zip(sample, preds):
        assert 0.0 <= p["confidence"] <= 1.0
        assert 1 <= len(p["top_k"]) <= 3
        assert p["top_k"][0]["answer"] == p["answer"] and p["top_k"][0]["score"] == p["confidence"]
        scores = [t["score"] for t in p["top_k"]]
        assert scores == sorted(scores, reverse=True)
        w, h = Image.open(os.path.join(root, it["image"])).size
        assert p["regions"], "explain=True must give regions"
        total = 0.0
        for r in p["regions"]:
            x0, y0, x1, y1 = r["box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            total += r["score"]
        assert 0 < total <= 1.0 + 1e-4
        region_scores = [r["score"] for r in p["regions"]]
        assert region_scores == sorted(region_scores, reverse=True)
    if get_spec(key).task == "classify":
        assert all(p["answer"] in adapter.label2id for p in preds)

    from gpu_worker.explain import draw_overlay
    out_png = str(tmp_path / "overlay.png")
    original = Image.open(os.path.join(root, sample[0]["image"])).convert("RGB")
    draw_overlay(os.path.join(root, sample[0]["image"]), preds[0]["regions"], out_png)
    drawn = Image.open(out_png).convert("RGB")
    assert drawn.size[0] * original.size[1] == drawn.size[1] * original.size[0]  # same aspect ratio
    scale = drawn.size[0] // original.size[0]
    assert drawn.tobytes() != original.resize(drawn.size, Image.NEAREST).tobytes()  # boxes were drawn
    assert scale >= 1

    again = str(tmp_path / "again")
    adapter.save(again)
    reloaded = get_adapter_class(key).load(again, device="cpu")
    preds2 = reloaded.predict(sample, root, top_k=3, explain=True)
    for a, b in zip(preds, preds2):
        assert a["answer"] == b["answer"]
        assert a["confidence"] == pytest.approx(b["confidence"], rel=1e-4, abs=1e-6)
        assert a["regions"][0]["box"] == b["regions"][0]["box"]


def test_vilt_explanations_undo_patch_shuffling(tmp_path):
    """ViLT shuffles patches on every forward; mapped back with patch_index, regions are stable and
    a non-square (padded) image still gets boxes inside its own pixels."""
    ckpt = make_tiny_checkpoint("vilt", str(tmp_path / "tiny"))
    img = Image.new("RGB", (128, 64), (0, 0, 0))
    img.paste((255, 255, 0), (80, 10, 120, 50))
    img.save(tmp_path / "wide.png")
    small = Image.new("RGB", (64, 64), (10, 10, 10))
    small.save(tmp_path / "sq.png")
    items = [{"id": 1, "image": "wide.png", "question": "what color is the shape?", "answers": ["yellow"] * 10},
             {"id": 2, "image": "sq.png", "question": "is there a shape?", "answers": ["no"] * 10}]
    spec = get_spec("vilt")
    adapter = get_adapter_class("vilt").create(spec, items, str(tmp_path), dict(spec.default_params),
                                               source=ckpt, device="cpu")
    adapter.eval()
    runs = [adapter.predict(items, str(tmp_path), top_k=2, explain=True) for _ in range(3)]
    for p in runs[1:]:
        for a, b in zip(runs[0], p):
            assert [r["box"] for r in a["regions"]] == [r["box"] for r in b["regions"]]
            assert [r["score"] for r in a["regions"]] == pytest.approx([r["score"] for r in b["regions"]], abs=1e-5)
    wide = runs[0][0]["regions"]
    # 128x64 -> resized to 96x48 (short side 64, long side capped at 1333/800*64, multiples of 16):
    # a 6 x 3 patch grid, so every box is 128/6 x 64/3 original pixels; top 16 of 18 cells returned
    assert len(wide) == 16
    for r in wide:
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 64
        assert x1 - x0 == pytest.approx(128 / 6, abs=0.11) and y1 - y0 == pytest.approx(64 / 3, abs=0.11)
    # the square image was padded to the wide one's size in the batch: its boxes stay inside 64x64
    for r in runs[0][1]["regions"]:
        assert r["box"][2] <= 64 and r["box"][3] <= 64
    assert sum(r["score"] for r in runs[0][1]["regions"]) == pytest.approx(1.0, abs=1e-4)


def test_grid_regions_map_cells_to_original_pixels():
    scores = torch.zeros(2, 4)
    scores[1, 3] = 3.0
    scores[0, 0] = 1.0
    regions = hc.grid_regions(scores, 2, 4, (400, 100), limit=2)
    assert regions[0] == {"box": [300.0, 50.0, 400.0, 100.0], "score": 0.75}
    assert regions[1] == {"box": [0.0, 0.0, 100.0, 50.0], "score": 0.25}
    # a grid that only partly covers the image (padding): 2 of 4 columns cover the 100 px width
    padded = hc.grid_regions(torch.ones(2, 4), 2, 4, (100, 100), covered_wh=(2, 2))
    assert len(padded) == 4 and all(r["box"][2] <= 100 for r in padded)


def test_soft_targets_and_candidates():
    items = [{"answers": ["yes"] * 3 + ["no"] * 7}, {"answers": ["two", "2", "2", "2", "2", "3", "3", "3", "3", "3"]}]
    vocab = hc.build_answer_vocab(items)
    t = hc.soft_targets(items, {a: i for i, a in enumerate(vocab)})
    assert t[0, vocab.index("yes")] == pytest.approx(0.9) and t[0, vocab.index("no")] == 1.0
    assert t[1, vocab.index("2")] == 1.0  # "two" normalises to "2": five votes
    ans, conf, top = hc.merge_candidates(["Two", "2", "three"], [-1.0, -1.5, -0.8], 3)
    assert ans == "2" and conf == pytest.approx(2.71828 ** -1 + 2.71828 ** -1.5, rel=1e-4)
    assert [x["answer"] for x in top] == ["2", "3"]


def test_specs_registered_and_offline_availability(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    keys = {"vilt": "classify", "vilt-vqa": "classify", "visualbert": "classify", "lxmert": "classify",
            "blip": "generate", "blip2": "generate", "florence2": "generate"}
    for key, task in keys.items():
        spec = get_spec(key)
        assert spec.task == task and spec.family in FAMILIES and spec.finetune_gpu_memory_gb > 0
        assert spec.needs_features == (spec.family in ("visualbert", "lxmert"))
        assert get_adapter_class(key).__name__.endswith("Adapter")
        av = availability(spec)
        assert set(av) == {"available", "reason"} and av["reason"]
        if spec.needs_features:  # no weights here: not offered
            assert av["available"] is False
    assert get_spec("vilt-vqa").zero_shot and not get_spec("vilt").zero_shot
