"""Regions -> overlays, the pointing game, and predict_batch/load_model on a trained tiny model."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.explain import draw_overlay, pointing_game, pointing_game_score, region_heatmap, shape_box
from gpu_worker.predict import detect_model_key, load_model, predict_batch


def _synthetic(tmp_path, box=(10, 20, 30, 50), size=(64, 64)):
    img = Image.new("RGB", size, (200, 180, 40))
    ImageDraw.Draw(img).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(20, 30, 200))
    path = tmp_path / "shape.png"
    img.save(path)
    return str(path)


def test_shape_box_from_background_corner(tmp_path, easy_items):
    assert shape_box(_synthetic(tmp_path)) == [10, 20, 30, 50]
    assert shape_box(Image.new("RGB", (8, 8), (1, 2, 3))) is None
    items, root = easy_items
    x0, y0, x1, y1 = shape_box(os.path.join(root, items[0]["image"]))
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and (x1 - x0) * (y1 - y0) < 64 * 64


def test_pointing_game_hits_and_misses(tmp_path):
    inside = {"box": [16, 24, 24, 32], "score": 0.6}      # centre (20, 28) is in [10,20,30,50]
    outside = {"box": [40, 0, 48, 8], "score": 0.3}
    assert pointing_game([outside, inside], [10, 20, 30, 50]) is True
    assert pointing_game([dict(outside, score=0.9), inside], [10, 20, 30, 50]) is False
    assert pointing_game([inside], _synthetic(tmp_path)) is True          # box computed from pixels
    assert pointing_game([], [0, 0, 1, 1]) is None
    near = {"box": [30, 50, 34, 54], "score": 1.0}                         # centre (32, 52)
    assert pointing_game([near], [10, 20, 30, 50]) is False
    assert pointing_game([near], [10, 20, 30, 50], tolerance=2) is True


def test_overlay_boxes_darker_is_stronger(tmp_path):
    src = _synthetic(tmp_path)
    regions = [{"box": [0, 0, 16, 16], "score": 0.5}, {"box": [48, 48, 64, 64], "score": 0.05},
               {"box": [0, 48, 16, 64], "score": 0.2}, {"box": [16, 0, 32, 16], "score": 0.04},
               {"box": [48, 0, 64, 16], "score": 0.03}, {"box": [40, 24, 56, 40], "score": 0.001}]
    out = draw_overlay(src, regions, str(tmp_path / "o" / "boxes.png"))
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (256, 256)                  # 64 px scaled x4
    arr = np.asarray(img.convert("L"), dtype=int)
    strongest = arr[0:3, 20:40].min()       # top edge of the [0,0,16,16] box (x4)
    weaker = arr[192:195, 200:220].min()    # top edge of the [48,48,64,64] box (x4)
    assert strongest < weaker
    # only the top 5 are drawn: the 6th region's edge is untouched
    plain = np.asarray(Image.open(src).resize((256, 256), Image.NEAREST).convert("L"), dtype=int)
    assert (arr[96:98, 170:210] == plain[96:98, 170:210]).all()
    assert (arr != plain).sum() > 100


def test_overlay_heatmap(tmp_path):
    src = _synthetic(tmp_path)
    regions = [{"box": [0, 0, 32, 32], "score": 1.0}, {"box": [32, 32, 64, 64], "score": 0.0}]
    heat = region_heatmap(regions, 64, 64)
    assert heat[5, 5] == 1.0 and heat[40, 40] == 0.0
    out = draw_overlay(Image.open(src), regions, str(tmp_path / "heat.png"), heatmap=True)
    arr = np.asarray(Image.open(out).convert("RGB"), dtype=int)
    orig = np.asarray(Image.open(src).convert("RGB").resize((256, 256), Image.NEAREST), dtype=int)
    assert (arr[200:, 200:] == orig[200:, 200:]).all()          # zero score: untouched
    assert arr[10, 10, 0] > orig[10, 10, 0]                      # strongest: blended towards red


def test_predict_batch_load_model_and_pointing(trained_tiny, tmp_path):
    result, out, items, root = trained_tiny
    folder = os.path.join(out, "model")
    assert detect_model_key(folder) == "baseline-rnn"
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    os.remove(bare / "piggyback.json")
    assert detect_model_key(str(bare)) == "baseline-rnn"
    adapter = load_model(folder)
    calls = []
    preds = predict_batch(adapter, items, root, top_k=3, batch_size=8, report=lambda p, s, m=None: calls.append(p))
    assert len(preds) == len(items) and calls[-1] == 1.0
    one_by_one = [predict_batch(adapter, [it], root, top_k=3)[0] for it in items[:5]]
    for a, b in zip(preds[:5], one_by_one):
        assert a["answer"] == b["answer"] and a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)
    for p in preds:
        assert 0 < p["confidence"] <= 1 and len(p["top_k"]) == 3 and len(p["regions"]) == 16
    score = pointing_game_score(preds, items, root)
    assert score["count"] == len(items) and 0 <= score["pointing_game"] <= 100
    assert draw_overlay(os.path.join(root, items[0]["image"]), preds[0]["regions"], str(tmp_path / "p.png"))
    no_regions = predict_batch(adapter, items[:2], root, explain=False)
    assert no_regions[0]["regions"] == []
    with pytest.raises(Cancelled):
        predict_batch(adapter, items, root, should_cancel=lambda: True)
    with pytest.raises(UserFacingError):
        load_model(str(tmp_path / "missing"))


def test_describe_regions_names_the_thirds_and_shares_strongest_first():
    from gpu_worker.explain import describe_regions

    regions = [{"box": [40, 0, 64, 20], "score": 0.2}, {"box": [0, 24, 20, 40], "score": 0.38},
               {"box": [20, 20, 44, 44], "score": 0.1}, {"box": [22, 50, 42, 64], "score": 0.05}]
    assert describe_regions(regions, 64, 64) == [
        "1. centre left, 38 %", "2. top right, 20 %", "3. centre, 10 %", "4. bottom centre, 5 %"]
    # scores that are not shares are normalised by their sum; at most `top` regions are described
    raw = [{"box": [0, 0, 10, 10], "score": 3.0}, {"box": [54, 54, 64, 64], "score": 1.0}]
    assert describe_regions(raw, 64, 64) == ["1. top left, 75 %", "2. bottom right, 25 %"]
    assert len(describe_regions(regions, 64, 64, top=2)) == 2
    assert describe_regions([], 64, 64) == []
