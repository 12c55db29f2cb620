"""Questions files in every accepted shape, streamed; spreadsheet-safe CSV export."""
import csv
import io
import json
import time

import pytest

from gpu_worker import UserFacingError
from gpu_worker.tabular import csv_safe, detect_encoding, open_questions, write_csv


def rows_of(path, ann=None):
    return list(open_questions(path, ann))


def write(tmp_path, name, text, encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return p


def test_csv_single_answer_column(tmp_path):
    p = write(tmp_path, "q.csv", "image,question,answer\ncat.png,what animal?,Cat\ndog.png,how many?,2\n")
    src = open_questions(p)
    assert src.format == "csv" and src.delimiter == "," and src.columns == ["image", "question", "answer"]
    rows = list(src)
    assert [(r.row, r.image, r.question, r.answers) for r in rows] == [
        (2, "cat.png", "what animal?", ["Cat"]), (3, "dog.png", "how many?", ["2"])]


def test_csv_answers_with_pipe_separator(tmp_path):
    p = write(tmp_path, "q.csv", "Image_ID,Question Text,Answers\na.png,q?,yes| yes |no||\n")
    (r,) = rows_of(p)
    assert (r.image, r.question, r.answers) == ("a.png", "q?", ["yes", "yes", "no"])


def test_csv_numbered_answer_columns_in_numeric_order(tmp_path):
    head = ",".join(["filename", "q"] + [f"answer_{i}" for i in (10, 1, 2, 3, 4, 5, 6, 7, 8, 9)])
    vals = ",".join(["a.png", "what?", "ten", "one", "two", "", "four", "", "", "", "", "nine"])
    p = write(tmp_path, "q.csv", head + "\n" + vals + "\n")
    (r,) = rows_of(p)
    assert r.answers == ["one", "two", "four", "nine", "ten"]


def test_csv_numbered_without_underscore(tmp_path):
    p = write(tmp_path, "q.csv", "img,question,answer1,Answer 2\na.png,what?,x,y\n")
    assert rows_of(p)[0].answers == ["x", "y"]


def test_csv_without_answers_is_a_test_set(tmp_path):
    p = write(tmp_path, "q.csv", "path,question\nsub/a.png,what?\n")
    (r,) = rows_of(p)
    assert r.answers == [] and r.image == "sub/a.png"


@pytest.mark.parametrize("delim", [";", "\t"])
def test_semicolon_and_tab_delimiters(tmp_path, delim):
    text = delim.join(["image", "question", "answer"]) + "\n" + delim.join(["a.png", "is it red, or blue?", "red"]) + "\n"
    src = open_questions(write(tmp_path, "q.csv", text))
    assert src.delimiter == delim
    assert [(r.image, r.question, r.answers) for r in src] == [("a.png", "is it red, or blue?", ["red"])]


def test_utf8_bom_and_latin1(tmp_path):
    p = write(tmp_path, "bom.csv", "\ufeffimage,question,answer\ncafé.png,où?,été\n")
    assert detect_encoding(p, "bom.csv") == "utf-8-sig"
    (r,) = rows_of(p)
    assert (r.image, r.question, r.answers) == ("café.png", "où?", ["été"])
    p2 = write(tmp_path, "l1.csv", "image;question;answer\ncafé.png;où?;été\n", encoding="latin-1")
    assert detect_encoding(p2, "l1.csv") == "latin-1"
    (r,) = rows_of(p2)
    assert (r.image, r.question, r.answers) == ("café.png", "où?", ["été"])


def test_latin1_byte_far_down_the_file_is_detected(tmp_path):
    lines = ["image,question,answer"] + [f"{i}.png,q{i}?,a" for i in range(20000)] + ["x.png,naïve?,a"]
    p = write(tmp_path, "q.csv", "\n".join(lines) + "\n", encoding="latin-1")
    assert rows_of(p)[-1].question == "naïve?"


def test_utf16_excel_unicode_text(tmp_path):
    p = write(tmp_path, "q.txt", "image\tquestion\tanswer\r\na.png\twhat?\tyes\r\n", encoding="utf-16")
    assert [(r.image, r.answers) for r in rows_of(p)] == [("a.png", ["yes"])]


def test_row_numbers_count_blank_lines_and_multiline_cells(tmp_path):
    text = 'image,question,answer\na.png,"two\nlines?",x\n\nb.png,q?,y\n'
    rows = rows_of(write(tmp_path, "q.csv", text))
    assert [(r.row, r.image) for r in rows] == [(2, "a.png"), (4, "b.png")]
    assert rows[0].question == "two\nlines?"


def test_missing_columns_error_names_found_and_expected(tmp_path):
    p = write(tmp_path, "q.csv", "picture,text,answer\na.png,what?,x\n")
    with pytest.raises(UserFacingError) as exc:
        open_questions(p)
    msg = str(exc.value)
    assert "'picture'" in msg and "'text'" in msg and "image_id" in msg and "question_text" in msg
    assert "q.csv" in msg


@pytest.mark.parametrize("payload,word", [
    (b"PK\x03\x04" + b"\x00" * 100, "Excel"),
    (b"image,question\n\x00\x01\x02\x03binary", "NUL"),
    (bytes(range(1, 9)) * 200, "binary"),
])
def test_binary_files_are_refused_clearly(tmp_path, payload, word):
    p = write(tmp_path, "q.csv", payload)
    with pytest.raises(UserFacingError, match=word):
        open_questions(p)


def test_empty_and_header_only(tmp_path):
    with pytest.raises(UserFacingError, match="empty"):
        open_questions(write(tmp_path, "e.csv", "  \n"))
    assert rows_of(write(tmp_path, "h.csv", "image,question\n")) == []


def test_unclosed_quote_names_the_row(tmp_path):
    big = "x" * (1 << 21)
    p = write(tmp_path, "q.csv", f'image,question\na.png,ok?\nb.png,"{big}\n')
    with pytest.raises(UserFacingError, match="row 3"):
        rows_of(p)


def test_vqa2_questions_and_annotations(tmp_path):
    qs = {"questions": [{"image_id": 9, "question": "What is it?", "question_id": 90},
                        {"image_id": 25, "question": "How many?", "question_id": 250},
                        {"image_id": 30, "question": "Orphan?", "question_id": 300}]}
    anns = {"annotations": [
        {"question_id": 90, "image_id": 9, "answer_type": "other", "question_type": "what is",
         "multiple_choice_answer": "cat", "answers": [{"answer": "cat", "answer_id": i} for i in range(1, 11)]},
        {"question_id": 250, "image_id": 25, "answer_type": "number", "question_type": "how many",
         "multiple_choice_answer": "2", "answers": [{"answer": "2"}, {"answer": "two"}]}]}
    qp = write(tmp_path, "v2_Questions.json", json.dumps(qs))
    ap = write(tmp_path, "v2_Annotations.json", json.dumps(anns))
    src = open_questions(qp, ap)
    assert src.format == "vqa2" and src.total is None  # streamed: the count is known only at the end
    rows = list(src)
    assert [(r.image_id, r.question_id, r.answer_type, r.question_type) for r in rows[:2]] == [
        (9, "90", "other", "what is"), (25, "250", "number", "how many")]
    assert rows[0].answers == ["cat"] * 10 and rows[1].answers == ["2", "two"]
    assert rows[2].answers == [] and any("no entry in the annotations" in w for w in src.warnings)
    # questions only (test split) and the two files swapped
    assert [r.answers for r in open_questions(qp)] == [[], [], []]
    assert [r.question_id for r in open_questions(ap, qp)] == ["90", "250", "300"]


def test_json_list_and_jsonl(tmp_path):
    data = [{"image": "a.png", "question": "q1?", "answers": ["x", "y"]},
            {"Image Name": "b", "Question": "q2?", "answer": "z|w"},
            {"image": "c.png", "question": "q3?", "answers": [{"answer": "v"}]}]
    src = open_questions(write(tmp_path, "q.json", json.dumps(data)))
    assert src.format == "json"
    assert [(r.row, r.image, r.answers) for r in src] == [(1, "a.png", ["x", "y"]), (2, "b", ["z", "w"]),
                                                         (3, "c.png", ["v"])]
    lines = [json.dumps(d) for d in data[:2]] + ["", "{broken", json.dumps(data[2])]
    src = open_questions(write(tmp_path, "q.jsonl", "\n".join(lines) + "\n"))
    rows = list(src)
    assert src.format == "jsonl"
    assert [(r.row, r.image, bool(r.error)) for r in rows] == [(1, "a.png", False), (2, "b", False),
                                                              (4, "", True), (5, "c.png", False)]
    # JSON Lines saved with a .json extension
    assert open_questions(write(tmp_path, "l.json", "\n".join(lines[:2]) + "\n")).format == "jsonl"


def test_json_missing_fields_and_bad_json(tmp_path):
    with pytest.raises(UserFacingError, match="'img_url'"):
        open_questions(write(tmp_path, "q.json", json.dumps([{"img_url": "a", "question": "q"}])))
    with pytest.raises(UserFacingError, match="not valid JSON"):
        open_questions(write(tmp_path, "b.json", "[{\"image\": 1,"))


def test_100k_rows_are_streamed_quickly(tmp_path):
    p = tmp_path / "big.csv"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "question", "answer"])
        for i in range(100_000):
            w.writerow([f"{i % 500}.png", f"what is shape {i}?", "circle"])
    src = open_questions(p)
    t = time.perf_counter()
    it = iter(src)
    first = next(it)
    assert first.row == 2 and src.progress() < 0.5  # not read to the end to produce the first row
    n = 1 + sum(1 for _ in it)
    elapsed = time.perf_counter() - t
    assert n == 100_000
    assert elapsed < 10, elapsed


def test_csv_safe_and_write_csv_neutralise_formulas(tmp_path):
    assert csv_safe("=1+1") == "'=1+1"
    for v in ("+a", "-b", "@c", "\tx", "\ry"):
        assert csv_safe(v) == "'" + v
    assert csv_safe("what?") == "what?" and csv_safe(5) == 5 and csv_safe("") == ""
    buf = io.StringIO()
    write_csv(buf, [{"question": '=HYPERLINK("http://x")', "answer": "yes"}, ["@SUM(A1)", None]],
              ["question", "answer"])
    got = list(csv.reader(io.StringIO(buf.getvalue())))
    assert got == [["question", "answer"], ["'=HYPERLINK(\"http://x\")", "yes"], ["'@SUM(A1)", ""]]
    p = tmp_path / "out.csv"
    write_csv(p, [("a.png", "=2+3", "5")], ["image", "question", "answer"])
    assert p.read_bytes().startswith(b"\xef\xbb\xbf")
    (r,) = rows_of(p)
    assert r.question == "'=2+3"


def _vqa2_files(tmp_path, n, *, shuffle_annotations=False, answers_per_question=10):
    """Official-shaped VQAv2 files (metadata keys first, the big list last) with ``n`` questions."""
    qp, ap = tmp_path / "v2_Questions_big.json", tmp_path / "v2_Annotations_big.json"
    order = list(range(n))
    if shuffle_annotations:
        order = order[::-1]
    with open(qp, "w") as fh:
        fh.write('{"info": {"year": 2017}, "task_type": "Open-Ended", "data_type": "mscoco", '
                 '"license": {"name": "CC"}, "data_subtype": "train2014", "questions": [')
        fh.write(",".join(json.dumps({"image_id": i // 5, "question": f"What is shown in picture {i}?",
                                      "question_id": i}) for i in range(n)))
        fh.write("]}")
    with open(ap, "w") as fh:
        fh.write('{"info": {"year": 2017}, "license": {"name": "CC"}, "data_subtype": "train2014", '
                 '"annotations": [')
        fh.write(",".join(json.dumps({
            "question_id": i, "image_id": i // 5, "question_type": "what is", "answer_type": "other",
            "multiple_choice_answer": f"thing {i % 7}",
            "answers": [{"answer": f"thing {(i + k) % 7}", "answer_confidence": "yes", "answer_id": k + 1}
                        for k in range(answers_per_question)]}) for i in order))
        fh.write('], "data_type": "mscoco"}')
    return qp, ap


def test_vqa2_is_streamed_with_a_small_heap(tmp_path):
    """Reading 40,000 question/annotation pairs never holds either document: the Python heap peak stays
    far below what json.load of the annotations file alone needs."""
    import tracemalloc

    qp, ap = _vqa2_files(tmp_path, 40_000)
    tracemalloc.start()
    with open(ap) as fh:
        json.load(fh)
    _, whole_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    src = open_questions(qp, ap)
    n = 0
    for row in src:
        n += 1
        assert row.answers and row.answer_type == "other"
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 40_000 and src.warnings == []
    streamed = peak - base
    assert streamed < 5_000_000 and streamed * 20 < whole_peak, (streamed, whole_peak)


def test_vqa2_progress_follows_the_file_and_annotations_in_another_order(tmp_path):
    qp, ap = _vqa2_files(tmp_path, 2000, shuffle_annotations=True, answers_per_question=2)
    src = open_questions(qp, ap)
    it = iter(src)
    first = next(it)
    assert first.question_id == "0" and first.answers == ["thing 0", "thing 1"]
    assert 0 < src.progress() < 0.9
    rows = [first] + list(it)
    assert [r.question_id for r in rows] == [str(i) for i in range(2000)]
    assert rows[1234].answers == ["thing 2", "thing 3"]  # 1234 % 7 == 2


def test_json_streamed_variants(tmp_path):
    # {"data": [...]}, latin-1 text, a break half-way through: rows up to the break, then a clear error
    p = tmp_path / "wrapped.json"
    p.write_text(json.dumps({"data": [{"image": "a.png", "question": "q?"}]}))
    assert [(r.row, r.image) for r in open_questions(p)] == [(1, "a.png")]
    p = tmp_path / "latin.json"
    p.write_bytes(json.dumps([{"image": "caf\u00e9.png", "question": "Qu\u00e9?"}], ensure_ascii=False)
                  .encode("latin-1"))
    assert [(r.image, r.question) for r in open_questions(p)] == [("caf\u00e9.png", "Qu\u00e9?")]
    p = tmp_path / "broken.json"
    p.write_text('[{"image": "a.png", "question": "q1?"}, {"image": "b.png", "question": "q2?"}, {"image": ')
    src = open_questions(p)
    it = iter(src)
    assert next(it).image == "a.png" and next(it).image == "b.png"
    with pytest.raises(UserFacingError, match="not valid JSON"):
        next(it)
    with pytest.raises(UserFacingError, match="no \"annotations\" list"):
        open_questions(*_vqa2_files(tmp_path, 3)[:1], tmp_path / "wrapped.json")
    with pytest.raises(UserFacingError, match="neither a list"):
        open_questions(write(tmp_path, "o.json", json.dumps({"image": "a.png", "question": "q"})))


def _workbook(path, rows):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(list(r))
    wb.save(path)
    return path


def test_xlsx_first_sheet_with_aliases_row_numbers_and_no_formulas(tmp_path):
    """Excel workbooks are read by pandas (openpyxl): same aliases as CSV, Excel's own row numbers (blank
    rows count), numbers as text, numbered answer columns, formulas never evaluated."""
    p = _workbook(tmp_path / "q.xlsx", [
        [], ["Image Name", "Question", "Answer 1", "Answer 2"],
        ["a.png", "How many?", 3, 3.5],
        [],
        ["b.png", "=HYPERLINK(\"http://x\")", "yes", None],
        ["c", "Colour?", "red", "dark red"],
    ])
    src = open_questions(p)
    assert src.format == "xlsx" and src.columns == ["Image Name", "Question", "Answer 1", "Answer 2"]
    rows = list(src)
    assert [(r.row, r.image, r.answers) for r in rows] == [
        (3, "a.png", ["3", "3.5"]), (5, "b.png", ["yes"]), (6, "c", ["red", "dark red"])]
    assert rows[1].question == ""  # a formula Excel never computed is empty, not run or kept as code
    assert rows[0].question == "How many?"


def test_xlsx_problems_are_clear(tmp_path):
    with pytest.raises(UserFacingError, match="no image and no question column"):
        open_questions(_workbook(tmp_path / "cols.xlsx", [["img_url", "text"], ["a", "b"]]))
    with pytest.raises(UserFacingError, match="empty workbook"):
        open_questions(_workbook(tmp_path / "empty.xlsx", []))
    damaged = tmp_path / "damaged.xlsx"
    damaged.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(UserFacingError, match="could not be read as an Excel workbook"):
        open_questions(damaged)
    text = write(tmp_path, "text.xlsx", "image,question\na.png,q?\n")
    with pytest.raises(UserFacingError, match="not an Excel workbook"):
        open_questions(text)
