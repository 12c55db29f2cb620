"""Read an uploaded questions file, one row at a time, and write spreadsheet-safe CSVs.

Formats (see :func:`open_questions`):

* CSV / TSV - encoding UTF-8 (with or without BOM), UTF-16 with BOM, else latin-1; delimiter sniffed
  among ``,`` ``;`` and TAB; header names matched through aliases (case, spaces, ``_`` and ``-``
  ignored). Answers come from ``answer`` / ``answers`` (several separated by ``|``) or numbered
  columns ``answer_1`` ... ``answer_10``. Rows are streamed; ``row`` is the number a spreadsheet shows
  (header = row 1).
* VQAv2 JSON - a questions file ``{"questions": [...]}`` plus an optional annotations file
  ``{"annotations": [...]}`` (or both lists in one file). Images are referred to by numeric id.
* A JSON list or JSON Lines of objects ``{"image", "question", "answer" | "answers"}``.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import Iterator, Optional

from gpu_worker import UserFacingError

__all__ = ["Row", "QuestionSource", "open_questions", "csv_safe", "write_csv", "detect_encoding",
           "header_key", "IMAGE_ALIASES", "QUESTION_ALIASES"]

IMAGE_ALIASES = ("image", "imageid", "imagename", "imagefile", "imagepath", "filename", "file", "img",
                 "path")
QUESTION_ALIASES = ("question", "questiontext", "q")
ANSWER_ALIASES = ("answer", "answers")
OPTIONAL_ALIASES = {"question_id": ("questionid", "qid", "id"), "answer_type": ("answertype",),
                    "question_type": ("questiontype",)}
_NUMBERED_ANSWER = re.compile(r"^answers?(\d{1,2})$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SNIFF_BYTES = 64 * 1024
MAX_FIELD = 1 << 20  # 1 MiB per cell


@dataclass
class Row:
    row: int                         # spreadsheet row (CSV, header = 1), JSON Lines line, or list index + 1
    image: str                       # file name / path as written by the user ("" when missing)
    question: str
    answers: list = field(default_factory=list)   # raw answer strings as given
    image_id: Optional[int] = None   # VQAv2 numeric image id
    question_id: Optional[str] = None
    answer_type: Optional[str] = None
    question_type: Optional[str] = None
    error: Optional[str] = None      # the row could not be read (bad JSON line, ...)


def header_key(name) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).replace("\ufeff", "").strip().lower())


def csv_safe(value):
    """Neutralise values a spreadsheet would run as a formula (prefix a ``'``)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(path_or_file, rows, header) -> None:
    """Write ``rows`` (sequences or dicts keyed by ``header``) with every cell passed through csv_safe.

    A path is written as UTF-8 with BOM (Excel then shows accents correctly)."""
    header = list(header)

    def _write(fh):
        w = csv.writer(fh)
        w.writerow([csv_safe(h) for h in header])
        for r in rows:
            values = [r.get(h, "") for h in header] if isinstance(r, dict) else list(r)
            w.writerow(["" if v is None else csv_safe(v) for v in values])

    if hasattr(path_or_file, "write"):
        _write(path_or_file)
    else:
        with open(path_or_file, "w", encoding="utf-8-sig", newline="") as fh:
            _write(fh)


# ---------------------------------------------------------------- encoding & binary detection
_BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP archive or an Excel workbook (.xlsx); in Excel use 'Save As > CSV UTF-8'",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office file (.xls); in Excel use 'Save As > CSV UTF-8'",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
}


def detect_encoding(path, label: str) -> str:
    """Return the codec to read ``path`` with, or raise UserFacingError for binary files."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        if head.startswith(codecs.BOM_UTF8):
            enc = "utf-8-sig"
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        else:
            enc = "utf-8"
        for magic, what in _BINARY_MAGIC.items():
            if head.startswith(magic):
                raise UserFacingError(f"The questions file '{label}' is not a text file: it looks like {what}. "
                                      f"Upload the questions as CSV, JSON or JSON Lines.")
        if b"\x00" in head:
            raise UserFacingError(f"The questions file '{label}' contains binary data (NUL bytes), so it is "
                                  f"not a CSV/JSON text file. Export it again as 'CSV UTF-8'.")
        controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
        if head and controls / len(head) > 0.05:
            raise UserFacingError(f"The questions file '{label}' looks like binary data, not text. "
                                  f"Export it again as 'CSV UTF-8'.")
        # whole-file UTF-8 check, streamed (a latin-1 'é' can sit on row 90,000)
        dec = codecs.getincrementaldecoder("utf-8")()
        fh.seek(0)
        try:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    dec.decode(b"", final=True)
                    break
                if b"\x00" in chunk:
                    raise UserFacingError(f"The questions file '{label}' contains binary data (NUL bytes). "
                                          f"Export it again as 'CSV UTF-8'.")
                dec.decode(chunk)
        except UnicodeDecodeError:
            return "latin-1"
    return enc


# ---------------------------------------------------------------- the source
class QuestionSource:
    """An opened questions file. Iterate it for :class:`Row` objects (streamed for CSV / JSON Lines)."""

    def __init__(self, fmt: str, label: str, rows_iter_factory, columns=(), warnings=(), total=None,
                 progress_fn=None, encoding=None, delimiter=None):
        self.format = fmt
        self.label = label
        self.columns = list(columns)
        self.warnings = list(warnings)
        self.total = total              # number of rows when known in advance (JSON), else None
        self.encoding = encoding
        self.delimiter = delimiter
        self._factory = rows_iter_factory
        self._progress_fn = progress_fn

    def __iter__(self) -> Iterator[Row]:
        return self._factory()

    def progress(self) -> Optional[float]:
        """Fraction of the file consumed so far (None when unknown)."""
        return self._progress_fn() if self._progress_fn else None


def _missing_columns(label, found, missing) -> UserFacingError:
    shown = ", ".join(f"'{c}'" for c in found) or "(none)"
    expected = {"image": "image (or image_id, image_name, filename, file, img, path)",
                "question": "question (or question_text, q)"}
    need = "; ".join(expected[m] for m in missing)
    return UserFacingError(f"The questions file '{label}' has no {' and no '.join(missing)} column. "
                           f"Columns found: {shown}. Expected: {need}, and optionally answer / answers "
                           f"(separated by '|') or answer_1 ... answer_10.")


def _map_columns(header: list, label: str):
    keys = [header_key(h) for h in header]
    roles: dict = {}
    warnings = []
    numbered = []

    def pick(role, aliases):
        for alias in aliases:  # alias order = priority
            for i, k in enumerate(keys):
                if k == alias:
                    roles[role] = i
                    return

    pick("image", IMAGE_ALIASES)
    pick("question", QUESTION_ALIASES)
    pick("answers", ANSWER_ALIASES)
    for role, aliases in OPTIONAL_ALIASES.items():
        pick(role, aliases)
    for i, k in enumerate(keys):
        m = _NUMBERED_ANSWER.match(k)
        if m:
            numbered.append((int(m.group(1)), i))
    numbered.sort()
    missing = [r for r in ("image", "question") if r not in roles]
    if missing:
        raise _missing_columns(label, [h.strip() for h in header], missing)
    if "answers" in roles and numbered:
        warnings.append(f"Both an '{header[roles['answers']].strip()}' column and numbered answer columns "
                        f"were found; the numbered columns are used.")
    return roles, [i for _, i in numbered], warnings


def _split_answers(value) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, dict):
                v = v.get("answer", "")
            if v is not None and str(v).strip():
                out.append(str(v).strip())
        return out
    return [a.strip() for a in str(value).split("|") if a.strip()]


def _sniff_delimiter(sample: str) -> str:
    lines = [ln for ln in sample.splitlines() if ln.strip()][:20]
    if not lines:
        return ","
    best, best_score = ",", (0, 0)
    for d in (",", ";", "\t"):
        try:
            parsed = list(csv.reader(lines[:-1] if len(lines) > 1 else lines, delimiter=d))
        except csv.Error:
            continue
        if not parsed:
            continue
        width = len(parsed[0])
        consistent = sum(1 for r in parsed[1:] if len(r) == width)
        score = (1 if width > 1 else 0, consistent * 1000 + width)
        if score > best_score:
            best, best_score = d, score
    return best


def _open_csv(path, label) -> QuestionSource:
    encoding = detect_encoding(path, label)
    with open(path, "r", encoding=encoding, newline="") as fh:
        sample = fh.read(SNIFF_BYTES)
    if not sample.strip():
        raise UserFacingError(f"The questions file '{label}' is empty. It needs a header row "
                              f"(image, question, answer) and one row per question.")
    delimiter = _sniff_delimiter(sample)
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))
    # read the header eagerly so missing columns fail right away
    with open(path, "r", encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header, header_row = None, 0
        try:
            for record in reader:
                header_row += 1
                if any(c.strip() for c in record):
                    header = record
                    break
        except csv.Error as exc:
            raise UserFacingError(f"The questions file '{label}' could not be read as CSV near row "
                                  f"{header_row + 1}: {exc}.") from exc
    if header is None:
        raise UserFacingError(f"The questions file '{label}' has no header row.")
    roles, numbered, warnings = _map_columns(header, label)
    state = {"fh": None, "size": max(os.path.getsize(path), 1)}

    def rows():
        with open(path, "rb") as raw:
            state["fh"] = raw
            text = io.TextIOWrapper(raw, encoding=encoding, newline="")
            reader = csv.reader(text, delimiter=delimiter)
            row_no = 0
            try:
                for record in reader:
                    row_no += 1
                    if row_no <= header_row or not any(c.strip() for c in record):
                        continue
                    yield _csv_row(record, row_no, roles, numbered)
            except csv.Error as exc:
                raise UserFacingError(f"The questions file '{label}' could not be read as CSV at row "
                                      f"{row_no + 1}: {exc}. Check for an unclosed quote (\") on that row."
                                      ) from exc
            finally:
                state["fh"] = None

    def progress():
        fh = state["fh"]
        try:
            return min(fh.tell() / state["size"], 1.0) if fh is not None else None
        except (OSError, ValueError):
            return None

    return QuestionSource("csv", label, rows, columns=[h.strip() for h in header], warnings=warnings,
                          progress_fn=progress, encoding=encoding, delimiter=delimiter)


def _cell(record, i):
    return record[i].strip() if i is not None and i < len(record) else ""


def _csv_row(record, row_no, roles, numbered) -> Row:
    if numbered:
        answers = [_cell(record, i) for i in numbered]
        answers = [a for a in answers if a]
    else:
        answers = _split_answers(_cell(record, roles.get("answers")))
    return Row(row=row_no, image=_cell(record, roles["image"]), question=_cell(record, roles["question"]),
               answers=answers, question_id=_cell(record, roles.get("question_id")) or None,
               answer_type=_cell(record, roles.get("answer_type")) or None,
               question_type=_cell(record, roles.get("question_type")) or None)


# ---------------------------------------------------------------- JSON flavours
def _load_json(path, label):
    encoding = detect_encoding(path, label)
    try:
        with open(path, "r", encoding=encoding) as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"The file '{label}' is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}).") from exc
    except RecursionError as exc:
        raise UserFacingError(f"The file '{label}' is nested too deeply to be a questions file.") from exc


def _obj_row(obj, row_no, label) -> Row:
    if not isinstance(obj, dict):
        return Row(row=row_no, image="", question="", error="is not an object with image/question fields")
    by_key = {header_key(k): v for k, v in obj.items()}

    def get(aliases):
        for a in aliases:
            if a in by_key and by_key[a] is not None:
                return by_key[a]
        return None

    image, question = get(IMAGE_ALIASES), get(QUESTION_ALIASES)
    answers = _split_answers(get(ANSWER_ALIASES))
    numbered = sorted((int(m.group(1)), v) for k, v in by_key.items() if (m := _NUMBERED_ANSWER.match(k)))
    if numbered:
        answers = [str(v).strip() for _, v in numbered if v is not None and str(v).strip()]
    qid = get(OPTIONAL_ALIASES["question_id"])
    return Row(row=row_no, image="" if image is None else str(image).strip(),
               question="" if question is None else str(question).strip(), answers=answers,
               image_id=image if isinstance(image, int) and not isinstance(image, bool) else None,
               question_id=None if qid is None else str(qid),
               answer_type=(str(get(("answertype",))) if get(("answertype",)) else None),
               question_type=(str(get(("questiontype",))) if get(("questiontype",)) else None))


def _check_list_columns(items, label):
    first = next((o for o in items if isinstance(o, dict)), None)
    if first is None:
        raise UserFacingError(f"The file '{label}' contains no question objects.")
    keys = {header_key(k) for k in first}
    missing = [role for role, aliases in (("image", IMAGE_ALIASES), ("question", QUESTION_ALIASES))
               if not keys.intersection(aliases)]
    if missing:
        raise _missing_columns(label, list(first.keys()), missing)


def _vqa2_source(data, ann_data, label) -> QuestionSource:
    questions = data.get("questions")
    if not isinstance(questions, list):
        raise UserFacingError(f"The file '{label}' looks like VQAv2 JSON but has no \"questions\" list.")
    annotations = {}
    ann_list = (ann_data or {}).get("annotations") if isinstance(ann_data, dict) else None
    if ann_data is not None and not isinstance(ann_list, list):
        raise UserFacingError("The annotations file has no \"annotations\" list (VQAv2 format expected).")
    for a in ann_list or []:
        if isinstance(a, dict) and "question_id" in a:
            annotations[str(a["question_id"])] = a

    def rows():
        for n, q in enumerate(questions, start=1):
            if not isinstance(q, dict):
                yield Row(row=n, image="", question="", error="is not a question object")
                continue
            image_id = q.get("image_id")
            qid = q.get("question_id")
            ann = annotations.get(str(qid)) if qid is not None else None
            answers, atype, qtype = [], None, None
            if ann is not None:
                answers = _split_answers(ann.get("answers"))
                if not answers and ann.get("multiple_choice_answer"):
                    answers = [str(ann["multiple_choice_answer"]).strip()]
                atype = ann.get("answer_type") or None
                qtype = ann.get("question_type") or None
            valid_id = isinstance(image_id, int) and not isinstance(image_id, bool)
            yield Row(row=n, image="" if image_id is None else str(image_id),
                      question=str(q.get("question") or "").strip(), answers=answers,
                      image_id=image_id if valid_id else None,
                      question_id=None if qid is None else str(qid),
                      answer_type=None if atype is None else str(atype),
                      question_type=None if qtype is None else str(qtype))

    warnings = []
    if ann_data is not None:
        unmatched = sum(1 for q in questions if isinstance(q, dict) and str(q.get("question_id")) not in annotations)
        if unmatched:
            warnings.append(f"{unmatched:,} questions have no entry in the annotations file; they are kept "
                            f"without answers.")
    return QuestionSource("vqa2", label, rows, columns=["image_id", "question", "question_id"],
                          warnings=warnings, total=len(questions))


def _jsonl_source(path, label) -> QuestionSource:
    encoding = detect_encoding(path, label)
    state = {"fh": None, "size": max(os.path.getsize(path), 1)}
    with open(path, "r", encoding=encoding) as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise UserFacingError(f"The first line of '{label}' is not valid JSON ({exc}).") from exc
                _check_list_columns([first], label)
                break

    def rows():
        with open(path, "rb") as raw:
            state["fh"] = raw
            for n, line in enumerate(io.TextIOWrapper(raw, encoding=encoding), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as exc:
                    yield Row(row=n, image="", question="", error=f"is not valid JSON ({exc})")
                    continue
                yield _obj_row(obj, n, label)
            state["fh"] = None

    def progress():
        fh = state["fh"]
        return min(fh.tell() / state["size"], 1.0) if fh is not None else None

    return QuestionSource("jsonl", label, rows, columns=[], progress_fn=progress, encoding=encoding)


def _first_char(path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    return text[:1]


def open_questions(path, annotations_path=None, *, display_name: Optional[str] = None) -> QuestionSource:
    """Open a questions file of any supported format. Raises UserFacingError for unusable files."""
    label = display_name or os.path.basename(str(path))
    if not os.path.isfile(path):
        raise UserFacingError(f"The questions file '{label}' was not found.")
    ext = os.path.splitext(str(path))[1].lower()
    first = _first_char(path)
    if ext in (".jsonl", ".ndjson"):
        return _jsonl_source(path, label)
    if ext == ".json" or (first in ("[", "{") and ext not in (".csv", ".tsv", ".txt")):
        if first == "{":
            try:
                data = _load_json(path, label)
            except UserFacingError as exc:
                if "Extra data" in str(exc):
                    return _jsonl_source(path, label)
                raise
        else:
            data = _load_json(path, label)
        ann = _load_json(annotations_path, os.path.basename(str(annotations_path))) if annotations_path else None
        if isinstance(data, dict) and "questions" in data:
            return _vqa2_source(data, ann if ann is not None else (data if "annotations" in data else None),
                                label)
        if isinstance(data, dict) and "annotations" in data and isinstance(ann, dict) and "questions" in ann:
            return _vqa2_source(ann, data, label)  # the two files were swapped
        if isinstance(data, dict):
            for key in ("data", "items", "rows"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        if not isinstance(data, list):
            raise UserFacingError(f"The file '{label}' is JSON but neither a list of questions nor VQAv2 "
                                  f"(a {{\"questions\": [...]}} object).")
        _check_list_columns(data, label)
        return QuestionSource("json", label, lambda: (_obj_row(o, n, label) for n, o in enumerate(data, 1)),
                              columns=list(next(o for o in data if isinstance(o, dict)).keys()),
                              total=len(data))
    return _open_csv(path, label)
