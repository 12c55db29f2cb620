"""clean_dataset with a sink: items and dropped rows leave in bounded chunks, never all held at once."""
import csv
import io
import tracemalloc
import zipfile

from PIL import Image

from gpu_worker.cleaning import clean_dataset


def _upload(tmp_path, n_rows, n_images=4):
    zp = tmp_path / "images.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for i in range(n_images):
            buf = io.BytesIO()
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(buf, "PNG")
            zf.writestr(f"img{i}.png", buf.getvalue())
    qp = tmp_path / "q.csv"
    with open(qp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(("image", "question", "answer"))
        for n in range(n_rows):
            image = "nowhere.png" if n % 97 == 5 else f"img{n % n_images}.png"
            question = f"What is thing number {n // 3 if n % 50 == 7 else n} here?"   # some duplicates
            w.writerow((image, question, "" if n % 11 == 0 else f"answer {n % 13}|yes"))
    return qp, zp


class _Recorder:
    def __init__(self, keep=True):
        self.keep, self.items, self.dropped, self.sizes = keep, [], [], []

    def add_items(self, items):
        self.sizes.append(len(items))
        if self.keep:
            self.items.extend(items)

    def add_dropped(self, dropped):
        self.sizes.append(len(dropped))
        if self.keep:
            self.dropped.extend(dropped)


def test_sink_gets_chunks_no_bigger_than_chunk_size_and_the_same_result(tmp_path):
    qp, zp = _upload(tmp_path, 1500)
    whole = clean_dataset(qp, zp, tmp_path / "a")
    sink = _Recorder()
    streamed = clean_dataset(qp, zp, tmp_path / "b", sink=sink, chunk_size=100)
    assert streamed.items == [] and streamed.dropped == []          # nothing kept in the result
    assert sink.sizes and max(sink.sizes) <= 100 and len(sink.sizes) > 10
    assert sink.items == whole.items and sink.dropped == whole.dropped
    reasons = {d["reason_code"] for d in sink.dropped}
    assert {"duplicate", "image_not_found"} <= reasons
    assert (streamed.counts, streamed.warnings, streamed.level) == (whole.counts, whole.warnings, whole.level)
    assert streamed.counts["rows_kept"] == len(sink.items) and streamed.counts["rows_dropped"] == len(sink.dropped)
    assert streamed.used_images == {it["image"] for it in whole.items} == whole.used_images
    assert streamed.rows_unlabelled == sum(1 for it in whole.items if not it["answers"]) > 0


def test_streamed_cleaning_memory_does_not_hold_the_items(tmp_path):
    """6,000 rows held as item dicts peak at ~6 MiB of Python allocations; streamed to a sink that drops them,
    ~1.4 MiB (duplicate hashes, caches, one chunk)."""
    qp, zp = _upload(tmp_path, 6000)
    sink = _Recorder(keep=False)
    tracemalloc.start()
    try:
        result = clean_dataset(qp, zp, tmp_path / "out", sink=sink, chunk_size=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.counts["rows_kept"] > 5500 and max(sink.sizes) <= 500
    assert peak < 3 * 2**20, f"peak {peak / 2**20:.1f} MiB"
