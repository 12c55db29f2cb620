"""Fuzzing the upload readers: any bytes give a clean result or a UserFacingError, nothing else."""
import io
import os
import tempfile
import zipfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gpu_worker import UserFacingError
from gpu_worker.safezip import Limits, scan_zip
from gpu_worker.tabular import open_questions

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMITS = Limits(max_members=50, max_total_bytes=2_000_000, max_member_bytes=500_000, max_ratio=50,
                      max_image_pixels=1_000_000, max_side=256)


def _png():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
header_names = st.sampled_from(["image", "Image ID", "question", "q", "answer", "answers", "answer_1",
                                "answer2", "filename", "x", "", "ANSWER 10"])


def _read_all(path):
    try:
        src = open_questions(path)
        rows = list(src)
    except UserFacingError as exc:
        assert str(exc)
        return None
    for r in rows:
        assert isinstance(r.row, int) and r.row >= 1
        assert isinstance(r.image, str) and isinstance(r.question, str)
        assert all(isinstance(a, str) and a for a in r.answers)
    return rows


@FUZZ
@given(data=st.binary(max_size=600), ext=st.sampled_from([".csv", ".json", ".jsonl", ".txt"]))
def test_questions_reader_on_random_bytes(data, ext):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "q" + ext)
        with open(p, "wb") as fh:
            fh.write(data)
        _read_all(p)


@FUZZ
@given(header=st.lists(header_names, min_size=1, max_size=5),
       rows=st.lists(st.lists(cell, max_size=6), max_size=8),
       delim=st.sampled_from([",", ";", "\t"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
def test_questions_reader_on_csv_like_text(header, rows, delim, encoding):
    text = "\n".join(delim.join(r) for r in [header] + rows) + "\n"
    raw = text.encode(encoding, errors="replace")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "q.csv")
        with open(p, "wb") as fh:
            fh.write(raw)
        _read_all(p)


member_names = st.one_of(
    st.sampled_from(["a.png", "dir/b.png", "../x.png", "/abs.png", "C:\\w.png", "__MACOSX/._a.png", ".hidden",
                     "dir/", "a.png", "noext", "r\\..\\..\\p.png", "img.jpg"]),
    st.text(min_size=1, max_size=20))
payloads = st.one_of(st.just(PNG), st.binary(max_size=300), st.builds(lambda n: PNG[:n], st.integers(0, len(PNG))),
                     st.builds(lambda b: b"\x00" * b, st.integers(0, 200_000)))


@FUZZ
@given(members=st.lists(st.tuples(member_names, payloads, st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
                        max_size=6),
       flip=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 5000)))
def test_zip_parser_on_mangled_archives(members, flip, cut):
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data, comp in members:
                try:
                    zf.writestr(zipfile.ZipInfo(name) if "\x00" not in name else "nul.png", data, compress_type=comp)
                except ValueError:
                    continue
    raw = bytearray(buf.getvalue())
    for pos, val in flip:
        if raw:
            raw[pos % len(raw)] = val
    if cut is not None:
        raw = raw[:cut]
    with tempfile.TemporaryDirectory() as d:
        zp = os.path.join(d, "u.zip")
        with open(zp, "wb") as fh:
            fh.write(bytes(raw))
        try:
            scan = scan_zip(zp, os.path.join(d, "out"), SMALL_LIMITS)
        except UserFacingError as exc:
            assert str(exc)
            return
        for im in scan.images:
            assert os.path.isfile(os.path.join(d, "out", im.stored_name))
            assert im.width <= 256 and im.height <= 256
        for s in scan.skipped + scan.ignored:
            assert s.reason_code and s.reason
        # nothing but accepted images lies in the output folder, and nothing escaped it
        assert set(os.listdir(os.path.join(d, "out"))) == {im.stored_name for im in scan.images}
        assert set(os.listdir(d)) == {"u.zip", "out"}
