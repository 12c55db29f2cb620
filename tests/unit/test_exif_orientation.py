"""Photos upright (issue 11.3): a JPEG for each EXIF orientation 1-8 enters through the ZIP check
(gpu_worker.safezip, used by dataset cleaning and batch evaluation), is stored upright without the tag,
and every family answers it exactly as it answers the upright picture, with the same region boxes.

The stored (sensor) pixels for each orientation are made here with numpy from the EXIF 2.3 definitions
("the 0th row is the visual ... side, the 0th column the visual ... side"), not with Pillow's own table,
so the test does not check Pillow against itself.
"""
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_worker.images import ORIENTATION_TAG, upright
from gpu_worker.models.registry import get_adapter_class, get_spec
from gpu_worker.models.tiny import make_tiny_backbone, make_tiny_checkpoint
from gpu_worker.safezip import scan_zip

W, H = 96, 64   # not square, so a missed 90 degree turn changes the size


def stored_pixels(upright_px: np.ndarray, orientation: int) -> np.ndarray:
    """What a camera writes for an upright view ``upright_px`` (H x W x 3) and an orientation tag."""
    a = upright_px
    return {
        1: a,                          # 0th row = top, 0th column = left
        2: a[:, ::-1],                 # 0th row = top, 0th column = right
        3: a[::-1, ::-1],              # 0th row = bottom, 0th column = right
        4: a[::-1, :],                 # 0th row = bottom, 0th column = left
        5: a.transpose(1, 0, 2),       # 0th row = left, 0th column = top
        6: np.rot90(a, 1),             # 0th row = right, 0th column = top
        7: a[::-1, ::-1].transpose(1, 0, 2),  # 0th row = right, 0th column = bottom
        8: np.rot90(a, -1),            # 0th row = left, 0th column = bottom
    }[orientation].copy()


def upright_picture() -> np.ndarray:
    """16x16 tiles of random colours (JPEG keeps flat 8x8 blocks exactly, so the test is about the
    orientation, not about compression noise) with a bright square top-left for the eye."""
    rng = np.random.default_rng(11)
    tiles = rng.integers(0, 256, size=(H // 16, W // 16, 3), dtype=np.uint8)
    px = np.kron(tiles, np.ones((16, 16, 1), dtype=np.uint8))
    px[0:16, 0:32] = (255, 255, 0)
    return px


def jpeg_bytes(px: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=92, subsampling=0, exif=exif.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The eight JPEGs through scan_zip: {orientation: stored path}, plus the folder."""
    tmp = tmp_path_factory.mktemp("exif")
    px = upright_picture()
    zpath = tmp / "photos.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for o in range(1, 9):
            zf.writestr(f"photo-{o}.jpg", jpeg_bytes(stored_pixels(px, o), o))
    out = tmp / "images"
    scan = scan_zip(zpath, out)
    assert not scan.skipped, scan.skipped
    by_name = {e.original_name: e for e in scan.images}
    return {o: by_name[f"photo-{o}.jpg"] for o in range(1, 9)}, out, px


def test_the_generated_jpegs_really_are_rotated():
    px = upright_picture()
    for o in range(1, 9):
        with Image.open(io.BytesIO(jpeg_bytes(stored_pixels(px, o), o))) as im:
            assert im.getexif()[ORIENTATION_TAG] == o
            assert im.size == ((W, H) if o <= 4 else (H, W))
            # Pillow's reading of the tag agrees with the EXIF definitions used above
            assert np.abs(np.asarray(upright(im), dtype=int) - px.astype(int)).max() <= 3


def test_stored_images_are_upright_and_untagged(ingested):
    entries, folder, px = ingested
    for o, entry in entries.items():
        assert (entry.width, entry.height) == (W, H), o
        with Image.open(folder / entry.stored_name) as im:
            assert im.size == (W, H)
            assert im.getexif().get(ORIENTATION_TAG, 1) == 1, o
            got = np.asarray(im.convert("RGB"), dtype=int)
        assert np.abs(got - px.astype(int)).max() <= 3, f"orientation {o} not stored upright"


def test_files_without_orientation_are_left_byte_for_byte(tmp_path):
    raw = jpeg_bytes(upright_picture(), 1)
    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a.jpg", raw)
    scan = scan_zip(zpath, tmp_path / "out")
    assert (tmp_path / "out" / scan.images[0].stored_name).read_bytes() == raw


def _tiny_adapter(key, items, root, tmp_path):
    spec = get_spec(key)
    params = dict(spec.default_params)
    source = None
    if spec.family != "baseline":
        source = make_tiny_checkpoint(spec.family, str(tmp_path / f"tiny-{key}"))
        params["feature_cache_dir"] = str(tmp_path / f"features-{key}")
        if spec.needs_features:  # region families name their (tiny, random) backbone explicitly, never silently
            params["feature_backbone"] = make_tiny_backbone(str(tmp_path / f"backbone-{key}"))
    else:
        params.update({"cnn_channels": [8, 8, 16, 16], "hidden_size": 32})
    torch.manual_seed(0)
    adapter = get_adapter_class(key).create(spec, items, root, params, source=source, device="cpu")
    adapter.eval()
    return adapter


@pytest.mark.parametrize("key", ["baseline-rnn", "vilt", "visualbert", "lxmert", "blip", "blip2", "florence2"])
def test_every_family_answers_every_orientation_like_the_upright_photo(key, ingested, tmp_path):
    entries, folder, _ = ingested
    torch.set_num_threads(1)
    question = "what color is the shape?"
    items = [{"id": o, "image": entries[o].stored_name, "question": question, "answers": ["yellow"] * 10}
             for o in range(1, 9)]
    adapter = _tiny_adapter(key, items, str(folder), tmp_path)
    preds = adapter.predict(items, str(folder), top_k=3, explain=get_spec(key).can_explain)
    ref = preds[0]
    for o, p in zip(range(1, 9), preds):
        assert p["answer"] == ref["answer"], o
        assert [t["answer"] for t in p["top_k"]] == [t["answer"] for t in ref["top_k"]], o
        assert p["confidence"] == pytest.approx(ref["confidence"], abs=1e-4), o
        assert [r["box"] for r in p["regions"]] == [r["box"] for r in ref["regions"]], o
        assert [r["score"] for r in p["regions"]] == pytest.approx([r["score"] for r in ref["regions"]], abs=1e-4)
        for r in p["regions"]:
            assert r["box"][2] <= W and r["box"][3] <= H
