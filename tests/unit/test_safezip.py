"""Hostile ZIP uploads: every trick must be refused or recorded, never extracted blindly."""
import io
import os
import stat
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from gpu_worker import Cancelled, UserFacingError, safezip
from gpu_worker.safezip import Limits, check_member_name, scan_zip


def png_bytes(w=16, h=12, color="red", noise=False):
    im = Image.new("RGB", (w, h), color)
    if noise:
        im = Image.frombytes("RGB", (w, h), os.urandom(w * h * 3))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(w=20, h=10):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), "blue").save(buf, "JPEG")
    return buf.getvalue()


def huge_header_png(width=100_000, height=100_000):
    """A valid-looking PNG whose IHDR claims gigapixels (10^10 pixels) with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def make_zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for m in members:
            zf.writestr(*m)
    return path


def info(name, payload, *, mode):
    zi = zipfile.ZipInfo(name)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = mode << 16
    return zi, payload


def codes(scan):
    return {s.name: s.reason_code for s in scan.skipped}


def test_good_images_are_stored_under_server_names(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("pics/cat.png", png_bytes(30, 20)), ("dog.jpeg", jpeg_bytes(20, 10)),
                                      ("sub/", b"")])
    scan = scan_zip(z, tmp_path / "out")
    assert [(i.original_name, i.width, i.height, i.format) for i in scan.images] == [
        ("pics/cat.png", 30, 20, "PNG"), ("dog.jpeg", 20, 10, "JPEG")]
    for im in scan.images:
        assert im.stored_name != os.path.basename(im.original_name)
        assert im.stored_name.startswith(im.sha256[:20])
        assert (tmp_path / "out" / im.stored_name).is_file()
    assert scan.images[1].stored_name.endswith(".jpg")
    assert scan.skipped == []
    assert sorted(os.listdir(tmp_path / "out")) == sorted(i.stored_name for i in scan.images)


def test_jpeg_named_png_gets_its_real_extension(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("photo.png", jpeg_bytes())])
    scan = scan_zip(z, tmp_path / "out")
    assert scan.images[0].format == "JPEG" and scan.images[0].stored_name.endswith(".jpg")


@pytest.mark.parametrize("name,code", [
    ("/etc/evil.png", "absolute_path"),
    ("C:/evil.png", "absolute_path"),
    ("../evil.png", "path_traversal"),
    ("a/../../evil.png", "path_traversal"),
    ("a\\..\\..\\evil.png", "path_traversal"),
])
def test_unsafe_paths_are_refused(tmp_path, name, code):
    z = make_zip(tmp_path / "a.zip", [(name, png_bytes()), ("ok.png", png_bytes(color="green"))])
    scan = scan_zip(z, tmp_path / "out")
    assert list(codes(scan).values()) == [code]
    assert [i.original_name for i in scan.images] == ["ok.png"]
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_check_member_name_normalises():
    assert check_member_name("./a//b\\c.png") == (None, "a/b/c.png")
    assert check_member_name("x/../y.png")[0] == "path_traversal"


def test_symlink_member_is_refused(tmp_path):
    z = make_zip(tmp_path / "a.zip", [info("link.png", b"/etc/passwd", mode=stat.S_IFLNK | 0o777),
                                      ("ok.png", png_bytes())])
    scan = scan_zip(z, tmp_path / "out")
    assert codes(scan) == {"link.png": "symlink"}
    assert len(scan.images) == 1


def test_encrypted_member_is_refused(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("secret.png", png_bytes()), ("ok.png", png_bytes())])
    patch_member(z, "secret.png", flag_bits=0x1)
    with zipfile.ZipFile(z) as zf:
        assert zf.getinfo("secret.png").flag_bits & 0x1
    scan = scan_zip(z, tmp_path / "out")
    assert codes(scan) == {"secret.png": "encrypted"}
    assert "password" in scan.skipped[0].reason


def test_macosx_and_dotfiles_are_ignored_not_dropped(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("__MACOSX/._a.png", b"junk"), (".DS_Store", b"junk"),
                                      ("imgs/.hidden.png", png_bytes()), ("notes.txt", b"hi"), ("a.png", png_bytes())])
    scan = scan_zip(z, tmp_path / "out")
    assert scan.skipped == []
    assert {s.name for s in scan.ignored} == {"__MACOSX/._a.png", ".DS_Store", "imgs/.hidden.png", "notes.txt"}
    assert len(scan.images) == 1


def test_too_many_members_is_fatal(tmp_path):
    z = make_zip(tmp_path / "a.zip", [(f"{i}.png", b"x") for i in range(12)])
    with pytest.raises(UserFacingError, match=r"12 entries; the limit is 10"):
        scan_zip(z, tmp_path / "out", Limits(max_members=10))


def test_compression_bomb_ratio_is_fatal(tmp_path):
    z = make_zip(tmp_path / "bomb.zip", [("a.png", png_bytes()), ("bomb.png", b"\x00" * (20 * 1024 * 1024))])
    with pytest.raises(UserFacingError, match="bomb.png") as exc:
        scan_zip(z, tmp_path / "out")
    assert "to 1" in str(exc.value) and "bomb.zip" in str(exc.value)
    assert not any(p.name.startswith(".incoming") for p in (tmp_path / "out").iterdir())


def patch_member(path, member, *, flag_bits=None, file_size=None):
    """Edit the local header and central directory record of ``member`` in place (crafting hostile ZIPs
    that zipfile refuses to write: encrypted flag, lying sizes)."""
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    count, _, cd_offset = struct.unpack_from("<HII", data, eocd + 10)
    pos = cd_offset
    for _ in range(count):
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46:pos + 46 + n] == member.encode():
            local = struct.unpack_from("<I", data, pos + 42)[0]
            if flag_bits is not None:
                struct.pack_into("<H", data, pos + 8, struct.unpack_from("<H", data, pos + 8)[0] | flag_bits)
                struct.pack_into("<H", data, local + 6, struct.unpack_from("<H", data, local + 6)[0] | flag_bits)
            if file_size is not None:
                struct.pack_into("<I", data, pos + 24, file_size)
                struct.pack_into("<I", data, local + 22, file_size)
        pos += 46 + n + m + k
    path.write_bytes(bytes(data))


def test_header_understating_the_size_never_yields_more_bytes(tmp_path):
    z = make_zip(tmp_path / "lie.zip", [("bomb.png", b"\x00" * (8 * 1024 * 1024)), ("ok.png", png_bytes())])
    patch_member(z, "bomb.png", file_size=1000)
    scan = scan_zip(z, tmp_path / "out")
    assert codes(scan) == {"bomb.png": "corrupt_member"}  # CRC of the first 1,000 bytes does not match
    assert scan.bytes_total <= 1000 + len(png_bytes())
    assert [i.original_name for i in scan.images] == ["ok.png"]


def test_copy_loop_counts_real_bytes_even_when_header_checks_pass(tmp_path, monkeypatch):
    """Second line of defence: with the checks on declared sizes switched off, the byte counters in
    the copy loop still stop a ratio bomb and an archive over the total-bytes cap."""
    monkeypatch.setattr(safezip, "_check_declared", lambda infos, limits, label: None)
    monkeypatch.setattr(safezip, "_declared_ratio_ok", lambda info, limits: True)
    z = make_zip(tmp_path / "bomb.zip", [("bomb.png", b"\x00" * (4 * 1024 * 1024))])
    with pytest.raises(UserFacingError, match="compresses more than 100 to 1"):
        scan_zip(z, tmp_path / "out")
    members = [(f"{i}.png", png_bytes(64, 64, noise=True)) for i in range(6)]
    z2 = make_zip(tmp_path / "a.zip", members, compression=zipfile.ZIP_STORED)
    with pytest.raises(UserFacingError, match="unpacks to more than"):
        scan_zip(z2, tmp_path / "out2", Limits(max_total_bytes=len(members[0][1]) * 3))
    assert not any(p.name.startswith(".incoming") for p in (tmp_path / "out2").iterdir())
    assert len(os.listdir(tmp_path / "out2")) == 3  # the first three images were accepted before the cap


def test_declared_total_over_cap_fails_before_reading(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("a.png", png_bytes()), ("b.png", png_bytes(color="blue"))])
    with pytest.raises(UserFacingError, match="would unpack"):
        scan_zip(z, tmp_path / "out", Limits(max_total_bytes=50))


def test_member_byte_cap_skips_member(tmp_path):
    big = png_bytes(200, 200, noise=True)
    z = make_zip(tmp_path / "a.zip", [("big.png", big), ("small.png", png_bytes())])
    scan = scan_zip(z, tmp_path / "out", Limits(max_member_bytes=len(big) - 1))
    assert codes(scan) == {"big.png": "file_too_large"}
    assert [i.original_name for i in scan.images] == ["small.png"]


def test_non_image_named_png_and_truncated_png(tmp_path):
    full = png_bytes(120, 120, noise=True)
    z = make_zip(tmp_path / "a.zip", [("fake.png", b"this is not a picture at all"),
                                      ("cut.png", full[: len(full) * 2 // 3]), ("ok.png", png_bytes())])
    scan = scan_zip(z, tmp_path / "out")
    c = codes(scan)
    assert c["fake.png"] == "not_an_image"
    assert c["cut.png"] in ("image_truncated", "image_unreadable")
    assert [i.original_name for i in scan.images] == ["ok.png"]


def test_gigapixel_header_is_refused_without_decoding(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("giga.png", huge_header_png()), ("ok.png", png_bytes())])
    scan = scan_zip(z, tmp_path / "out")
    assert codes(scan) == {"giga.png": "image_too_many_pixels"}
    assert "10000000000 pixels" in scan.skipped[0].reason


def test_max_image_pixels_restored_and_moderate_limit(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    z = make_zip(tmp_path / "a.zip", [("mid.png", png_bytes(300, 300))])
    scan = scan_zip(z, tmp_path / "out", Limits(max_image_pixels=10_000))
    assert codes(scan) == {"mid.png": "image_too_many_pixels"}
    assert Image.MAX_IMAGE_PIXELS == before


def test_oversized_images_are_skipped_with_size(tmp_path):
    z = make_zip(tmp_path / "a.zip", [("wide.png", png_bytes(50, 10)), ("ok.png", png_bytes(40, 40))])
    scan = scan_zip(z, tmp_path / "out", Limits(max_side=40))
    assert [(s.name, s.width, s.height) for s in scan.oversized] == [("wide.png", 50, 10)]
    assert [i.original_name for i in scan.images] == ["ok.png"]


def test_not_a_zip_is_fatal(tmp_path):
    p = tmp_path / "images.zip"
    p.write_bytes(b"name,question\n")
    with pytest.raises(UserFacingError, match="not a readable ZIP"):
        scan_zip(p, tmp_path / "out")


def test_duplicate_member_names_and_identical_content(tmp_path):
    data = png_bytes()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        z = make_zip(tmp_path / "a.zip", [("a.png", data), ("a.png", png_bytes(color="blue")), ("b.png", data)])
    scan = scan_zip(z, tmp_path / "out")
    assert codes(scan) == {"a.png": "duplicate_member"}
    assert [i.original_name for i in scan.images] == ["a.png", "b.png"]
    assert scan.images[0].stored_name == scan.images[1].stored_name  # same bytes, stored once
    assert len(os.listdir(tmp_path / "out")) == 1


def test_cancel_and_progress(tmp_path):
    z = make_zip(tmp_path / "a.zip", [(f"{i}.png", png_bytes(color=(i, 0, 0))) for i in range(60)])
    seen = []
    scan_zip(z, tmp_path / "out", report=lambda p, s: seen.append(p))
    assert seen[0] == 0.0 and seen[-1] == 1.0
    with pytest.raises(Cancelled):
        scan_zip(z, tmp_path / "out2", should_cancel=lambda: True)


def _mixed_members(n=70):
    """Good photos (some with the same bytes), a fake, a truncated file, an oversized one, a text file."""
    full = png_bytes(120, 120, noise=True)
    members = [(f"img/{i:03d}.png", png_bytes(40, 30, color=(i % 7 * 30, 0, 0))) for i in range(n)]
    members += [("fake.png", b"not a picture"), ("cut.png", full[: len(full) // 2]),
                ("big.png", png_bytes(400, 10)), ("readme.txt", b"hello"), ("alpha.png", _rgba_png())]
    return members


def _rgba_png():
    buf = io.BytesIO()
    Image.new("RGBA", (300, 60), (0, 255, 0, 128)).save(buf, "PNG")
    return buf.getvalue()


def _outcome(scan):
    return ([(i.original_name, i.stored_name, i.width, i.height, i.thumbnail) for i in scan.images],
            [(s.name, s.reason_code, s.reason) for s in scan.skipped], [s.name for s in scan.ignored])


def test_process_pool_gives_the_same_outcome_in_the_same_order(tmp_path):
    z = make_zip(tmp_path / "a.zip", _mixed_members())
    limits = Limits(max_side=300)
    one = scan_zip(z, tmp_path / "one", limits, thumbs_dir=tmp_path / "t1")
    seen = []
    pool = scan_zip(z, tmp_path / "pool", limits, workers=2, thumbs_dir=tmp_path / "t2",
                    report=lambda p, s: seen.append(p))
    assert _outcome(one) == _outcome(pool)
    assert seen[-1] == 1.0
    reasons = {s.name: s.reason_code for s in pool.skipped}
    assert reasons["fake.png"] == "not_an_image" and reasons["big.png"] == "image_oversized"
    assert reasons["cut.png"] in ("image_truncated", "image_unreadable")
    assert len(pool.images) == 71 and len({i.stored_name for i in pool.images}) == 8  # 7 colours + alpha
    assert sorted(os.listdir(tmp_path / "pool")) == sorted({i.stored_name for i in pool.images})
    # one thumbnail per stored image: WebP, at most 256 px, transparency kept
    assert sorted(os.listdir(tmp_path / "t2")) == sorted({i.thumbnail for i in pool.images})
    alpha = next(i for i in pool.images if i.original_name == "alpha.png")
    with Image.open(tmp_path / "t2" / alpha.thumbnail) as im:
        assert im.format == "WEBP" and im.size == (256, 51) and im.mode == "RGBA"


def test_process_pool_cancel_and_fatal_error_leave_no_temporary_files(tmp_path, monkeypatch):
    z = make_zip(tmp_path / "a.zip", _mixed_members(200))
    calls = []

    def cancel_later():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        scan_zip(z, tmp_path / "out", workers=2, thumbs_dir=tmp_path / "t", should_cancel=cancel_later)
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".incoming")]
    monkeypatch.setattr(safezip, "_check_declared", lambda infos, limits, label: None)
    members = [(f"{i}.png", png_bytes(64, 64, noise=True)) for i in range(40)]
    z2 = make_zip(tmp_path / "b.zip", members, compression=zipfile.ZIP_STORED)
    with pytest.raises(UserFacingError, match="unpacks to more than"):
        scan_zip(z2, tmp_path / "out2", Limits(max_total_bytes=len(members[0][1]) * 30), workers=2)
    assert not [p for p in os.listdir(tmp_path / "out2") if p.startswith(".incoming")]


# ---------------------------------------------------------------- JPEGs are checked with DCT-scaled decoding
def photo_jpeg(w=640, h=480, *, seed=0, progressive=False, orientation=None):
    """A noisy photo-like JPEG (lots of entropy-coded data, like a camera's)."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16) + rng.normal(0, 6, (h, w, 3)).astype(np.int16)
    buf = io.BytesIO()
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85,
                                                                progressive=progressive, **extra)
    return buf.getvalue()


def _full_decode_verdict(path):
    """What a plain full-size decode (no DCT scaling) says about a file: True when it decodes."""
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - any failure counts as "rejected"
        return False


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("thumb", [False, True])
def test_draft_decoding_still_rejects_truncated_jpegs(tmp_path, progressive, thumb):
    data = photo_jpeg(progressive=progressive)
    sos = data.find(b"\xff\xda")
    for i, cut in enumerate((len(data) - 2, len(data) * 2 // 3, sos + 40)):
        p = tmp_path / f"cut{i}.jpg"
        p.write_bytes(data[:cut])
        t = tmp_path / f"cut{i}.webp"
        code, msg, _ = safezip.check_image_file(p, Limits(), thumb_path=t if thumb else None)
        assert code == "image_truncated", (cut, code, msg)
        assert not t.exists()


@pytest.mark.parametrize("thumb", [False, True])
def test_draft_decoding_judges_damaged_entropy_data_like_a_full_decode(tmp_path, thumb):
    """Bytes overwritten inside the compressed scan: whatever a full-size decode rejects, the DCT-scaled
    check rejects too (libjpeg entropy-decodes every block at every scale), and vice versa."""
    data = photo_jpeg(seed=3)
    sos = data.find(b"\xff\xda")
    rng = np.random.default_rng(7)
    verdicts = []
    for k in range(24):
        b = bytearray(data)
        if k % 3 == 0:   # a run of 0xFF: markers in the middle of the scan
            start = int(rng.integers(sos + 100, len(b) - 600))
            b[start:start + 400] = b"\xff" * 400
        else:            # scattered byte flips
            for i in rng.integers(sos + 100, len(b) - 4, size=30 * (k % 3)):
                b[int(i)] = int(rng.integers(0, 256))
        p = tmp_path / f"bad{k}.jpg"
        p.write_bytes(bytes(b))
        code, msg, _ = safezip.check_image_file(p, Limits(), thumb_path=tmp_path / f"bad{k}.webp" if thumb else None)
        full_ok = _full_decode_verdict(p)
        assert (code is None) == full_ok, (k, code, msg)
        verdicts.append(full_ok)
    assert not all(verdicts), "no variant was damaged enough to be rejected: the test proves nothing"


def test_draft_thumbnail_matches_a_full_decode_and_keeps_the_full_size(tmp_path):
    p = tmp_path / "photo.jpg"
    p.write_bytes(photo_jpeg(seed=5))
    code, fmt, size = safezip.check_image_file(p, Limits(), thumb_path=tmp_path / "t.webp")
    assert (code, fmt, size) == (None, "JPEG", (640, 480))   # the real size, not the DCT-scaled one
    with Image.open(p) as full:
        full.load()
        ref = np.asarray(full.resize((256, 192), Image.LANCZOS), dtype=float)
    with Image.open(tmp_path / "t.webp") as th:
        assert th.format == "WEBP" and th.size == (256, 192)
        diff = np.asarray(th.convert("RGB"), dtype=float) - ref
    assert np.sqrt(np.mean(diff ** 2)) < 6   # same picture (WebP at quality 80), not a blur or a crop


def test_draft_thumbnail_is_upright_and_the_file_is_turned_once(tmp_path):
    p = tmp_path / "rotated.jpg"
    p.write_bytes(photo_jpeg(640, 480, seed=9, orientation=6))   # 6: turn 90 degrees clockwise to view
    code, fmt, size = safezip.accept_image_file(p, Limits(), thumb_path=tmp_path / "t.webp")
    assert (code, size) == (None, (480, 640))
    with Image.open(tmp_path / "t.webp") as th:
        assert th.size == (192, 256)
    with Image.open(p) as im:
        assert im.size == (480, 640) and im.getexif().get(0x0112, 1) == 1
