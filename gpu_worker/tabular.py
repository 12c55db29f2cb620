"""Read an uploaded questions file, one row at a time, and write spreadsheet-safe CSVs.

Formats (see :func:`open_questions`):

* CSV / TSV - encoding UTF-8 (with or without BOM), UTF-16 with BOM, else latin-1; delimiter sniffed
  among ``,`` ``;`` and TAB; header names matched through aliases (case, spaces, ``_`` and ``-``
  ignored). Answers come from ``answer`` / ``answers`` (several separated by ``|``) or numbered
  columns ``answer_1`` ... ``answer_10``. Rows are streamed; ``row`` is the number a spreadsheet shows
  (header = row 1).
* VQAv2 JSON (streamed with ijson, never parsed whole) - a questions file ``{"questions": [...]}`` plus an optional annotations file
  ``{"annotations": [...]}`` (or both lists in one file). Images are referred to by numeric id.
* Excel ``.xlsx`` - the first sheet, read with pandas (openpyxl), the same columns and aliases as CSV.
* A JSON list or JSON Lines of objects ``{"image", "question", "answer" | "answers"}``.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Iterator, Optional

import ijson

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


def csv_row_writer(fh, header):
    """Write ``header`` to the text file ``fh`` now; returns ``write_row(row)`` for the rows that follow, one at a
    time (a sequence or a dict keyed by ``header``), every cell passed through csv_safe."""
    header = list(header)
    w = csv.writer(fh)
    w.writerow([csv_safe(h) for h in header])

    def write_row(r) -> None:
        values = [r.get(h, "") for h in header] if isinstance(r, dict) else list(r)
        w.writerow(["" if v is None else csv_safe(v) for v in values])

    return write_row


def write_csv(path_or_file, rows, header) -> None:
    """Write ``rows`` (sequences or dicts keyed by ``header``) with every cell passed through csv_safe.

    A path is written as UTF-8 with BOM (Excel then shows accents correctly)."""
    header = list(header)

    def _write(fh):
        write_row = csv_row_writer(fh, header)
        for r in rows:
            write_row(r)

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
        self.warnings = warnings if isinstance(warnings, list) else list(warnings)  # may grow while read
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


# ---------------------------------------------------------------- Excel workbooks (pandas + openpyxl)
XLSX_MAGIC = b"PK\x03\x04"


def _open_xlsx(path, label) -> QuestionSource:
    """The first sheet of an .xlsx workbook, read by pandas (openpyxl engine) as text cells.

    Rows keep the numbers Excel shows (blank rows count); formulas are never evaluated: a formula
    cell gives the value Excel saved with it, or nothing."""
    import pandas as pd

    with open(path, "rb") as fh:
        if fh.read(4) != XLSX_MAGIC:
            raise UserFacingError(f"The questions file '{label}' is named .xlsx but is not an Excel workbook. "
                                  f"Save it again in Excel as 'Excel Workbook (.xlsx)' or as 'CSV UTF-8'.")
    try:
        frame = pd.read_excel(path, sheet_name=0, header=None, dtype=str, keep_default_na=False,
                              engine="openpyxl")
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types on damaged workbooks
        raise UserFacingError(f"The questions file '{label}' could not be read as an Excel workbook "
                              f"({type(exc).__name__}: {str(exc)[:200]}). Save it again in Excel as .xlsx, "
                              f"or as 'CSV UTF-8'.") from exc
    records = frame.fillna("").astype(str).values.tolist()
    header_at = next((i for i, r in enumerate(records) if any(c.strip() for c in r)), None)
    if header_at is None:
        raise UserFacingError(f"The questions file '{label}' is an empty workbook. Its first sheet needs a "
                              f"header row (image, question, answer) and one row per question.")
    header = records[header_at]
    roles, numbered, warnings = _map_columns(header, label)

    def rows():
        for i in range(header_at + 1, len(records)):
            if any(c.strip() for c in records[i]):
                yield _csv_row(records[i], i + 1, roles, numbered)  # Excel's row number: index + 1

    return QuestionSource("xlsx", label, rows, columns=[h.strip() for h in header if h.strip()],
                          warnings=warnings, total=len(records) - header_at - 1)


# ---------------------------------------------------------------- JSON flavours (streamed with ijson)
_JSON_ERRORS = (ijson.JSONError, ValueError, UnicodeDecodeError, RecursionError)
JSONL_SNIFF_BYTES = 1 << 20


class _Utf8Reader:
    """A byte stream of UTF-8 for ijson from a file in another encoding (latin-1, UTF-16)."""

    def __init__(self, raw, encoding):
        self._text = io.TextIOWrapper(raw, encoding=encoding)

    def read(self, n=-1):
        return self._text.read(n).encode("utf-8")


class _JsonFile:
    """A JSON file read incrementally: ``items(prefix)`` yields the values under an ijson prefix.

    Nothing holds the whole document; ``progress()`` is the read position over the file size."""

    def __init__(self, path, label):
        self.path, self.label = path, label
        self.encoding = detect_encoding(path, label)
        self.size = max(os.path.getsize(path), 1)
        self._raw = None

    def _open(self):
        raw = open(self.path, "rb")
        if self.encoding == "utf-8-sig":
            raw.seek(len(codecs.BOM_UTF8))
        return raw

    def error(self, exc) -> UserFacingError:
        if isinstance(exc, RecursionError):
            return UserFacingError(f"The file '{self.label}' is nested too deeply to be a questions file.")
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return UserFacingError(f"The file '{self.label}' is not valid JSON ({text}).")

    def _stream(self, raw):
        return raw if self.encoding in ("utf-8", "utf-8-sig") else _Utf8Reader(raw, self.encoding)

    def items(self, prefix):
        with self._open() as raw:
            self._raw = raw
            try:
                yield from ijson.items(self._stream(raw), prefix, use_float=True)
            except _JSON_ERRORS as exc:
                raise self.error(exc) from exc
            finally:
                self._raw = None

    def layout(self, wanted=()):
        """("list", set()) or ("map", top-level keys seen), reading only until every ``wanted`` key showed up."""
        keys: set = set()
        depth = 0
        kind = None
        with self._open() as raw:
            try:
                for event, value in ijson.basic_parse(self._stream(raw), use_float=True):
                    if kind is None:
                        if event not in ("start_map", "start_array"):
                            return "scalar", keys
                        kind = "map" if event == "start_map" else "list"
                        if kind == "list":
                            return kind, keys
                    if event == "map_key" and depth == 1:
                        keys.add(value)
                        if wanted and keys.issuperset(wanted):
                            return kind, keys
                    if event in ("start_map", "start_array"):
                        depth += 1
                    elif event in ("end_map", "end_array"):
                        depth -= 1
            except _JSON_ERRORS as exc:
                raise self.error(exc) from exc
        if kind is None:
            raise UserFacingError(f"The file '{self.label}' is empty; it needs a list of questions.")
        return kind, keys

    def progress(self) -> Optional[float]:
        raw = self._raw
        try:
            return min(raw.tell() / self.size, 1.0) if raw is not None else None
        except (OSError, ValueError):
            return None


def _looks_like_jsonl(path) -> bool:
    """A first line that is a whole JSON object followed by more text: JSON Lines saved as .json."""
    with open(path, "rb") as fh:
        head = fh.read(JSONL_SNIFF_BYTES)
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    first, sep, rest = text.partition("\n")
    if not sep or not rest.strip():
        return False
    try:
        return isinstance(json.loads(first), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


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


def _compact_annotation(a: dict) -> tuple:
    """What a row needs from one VQAv2 annotation, with repeated strings shared (answers repeat a lot)."""
    answers = _split_answers(a.get("answers"))
    if not answers and a.get("multiple_choice_answer"):
        answers = [str(a["multiple_choice_answer"]).strip()]
    atype, qtype = a.get("answer_type") or None, a.get("question_type") or None
    return (tuple(sys.intern(x) for x in answers), None if atype is None else sys.intern(str(atype)),
            None if qtype is None else sys.intern(str(qtype)))


class _AnnotationLookup:
    """Answers by question id, read from the annotations stream as far as needed.

    The official files list annotations in question order, so a lookup usually takes the next one and
    memory stays flat; annotations read past (another order, orphan questions) wait in ``pending``."""

    def __init__(self, stream):
        self._it = iter(stream)
        self.pending: dict = {}

    def get(self, qid):
        key = str(qid)
        hit = self.pending.pop(key, None)
        if hit is not None or self._it is None:
            return hit
        for a in self._it:
            if not isinstance(a, dict) or "question_id" not in a:
                continue
            k = str(a["question_id"])
            rec = _compact_annotation(a)
            if k == key:
                return rec
            self.pending[k] = rec
        self._it = None
        return None


def _vqa2_row(n, q, ann) -> Row:
    image_id = q.get("image_id")
    qid = q.get("question_id")
    answers, atype, qtype = (list(ann[0]), ann[1], ann[2]) if ann is not None else ([], None, None)
    valid_id = isinstance(image_id, int) and not isinstance(image_id, bool)
    return Row(row=n, image="" if image_id is None else str(image_id),
               question=str(q.get("question") or "").strip(), answers=answers,
               image_id=image_id if valid_id else None,
               question_id=None if qid is None else str(qid),
               answer_type=atype, question_type=qtype)


def _vqa2_source(qfile: _JsonFile, afile: Optional[_JsonFile]) -> QuestionSource:
    """VQAv2: questions and annotations are both streamed; the warnings are complete after iteration."""
    warnings: list = []

    def rows():
        warnings.clear()
        lookup = _AnnotationLookup(afile.items("annotations.item")) if afile is not None else None
        unmatched = 0
        for n, q in enumerate(qfile.items("questions.item"), start=1):
            if not isinstance(q, dict):
                yield Row(row=n, image="", question="", error="is not a question object")
                continue
            qid = q.get("question_id")
            ann = lookup.get(qid) if (lookup is not None and qid is not None) else None
            unmatched += lookup is not None and ann is None
            yield _vqa2_row(n, q, ann)
        if unmatched:
            warnings.append(f"{unmatched:,} questions have no entry in the annotations file; they are kept "
                            f"without answers.")

    return QuestionSource("vqa2", qfile.label, rows, columns=["image_id", "question", "question_id"],
                          warnings=warnings, progress_fn=qfile.progress)


def _json_list_source(jf: _JsonFile, prefix: str) -> QuestionSource:
    first = None
    for obj in jf.items(prefix):
        if isinstance(obj, dict):
            first = obj
            break
    _check_list_columns([first] if first is not None else [], jf.label)

    def rows():
        return (_obj_row(o, n, jf.label) for n, o in enumerate(jf.items(prefix), 1))

    return QuestionSource("json", jf.label, rows, columns=list(first.keys()), progress_fn=jf.progress)


_LIST_KEYS = ("data", "items", "rows")


def _open_json(path, annotations_path, label) -> QuestionSource:
    jf = _JsonFile(path, label)
    kind, keys = jf.layout(wanted=("questions",) if annotations_path else ())
    af = None
    if annotations_path:
        af = _JsonFile(annotations_path, os.path.basename(str(annotations_path)))
        a_kind, a_keys = af.layout(wanted=("annotations",))
        if "questions" not in keys and "annotations" in keys and "questions" in a_keys:
            return _vqa2_source(af, jf)  # the two files were swapped
        if "questions" in keys and "annotations" not in a_keys:
            raise UserFacingError("The annotations file has no \"annotations\" list (VQAv2 format expected).")
    if kind == "map" and "questions" in keys:
        return _vqa2_source(jf, af if af is not None else (jf if "annotations" in keys else None))
    if kind == "list":
        return _json_list_source(jf, "item")
    for key in _LIST_KEYS:
        if kind == "map" and key in keys:
            return _json_list_source(jf, f"{key}.item")
    raise UserFacingError(f"The file '{label}' is JSON but neither a list of questions nor VQAv2 "
                          f"(a {{\"questions\": [...]}} object).")


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
    if ext == ".xlsx":
        return _open_xlsx(path, label)
    first = _first_char(path)
    if ext in (".jsonl", ".ndjson"):
        return _jsonl_source(path, label)
    if ext == ".json" or (first in ("[", "{") and ext not in (".csv", ".tsv", ".txt")):
        if first == "{" and _looks_like_jsonl(path):
            return _jsonl_source(path, label)
        return _open_json(path, annotations_path, label)
    return _open_csv(path, label)
