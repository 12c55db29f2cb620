"""Answer normalisation exactly as the official VQA evaluation (vqaEval.py, 2021 version).

``process_punctuation`` and ``process_digit_article`` reproduce ``VQAEval.processPunctuation`` and
``VQAEval.processDigitArticle`` *including their quirks*, so our scores match the leaderboard's:

* punctuation is tested against the ORIGINAL text ("touches a space") while replacements are applied
  to the progressively edited text; when the text contains digit-comma-digit anywhere, every listed
  punctuation mark is deleted instead of being replaced by a space;
* the period regex is the original ``(?!<=\\d)(\\.)(?!\\d)`` - a typo for a look-behind, so it is really
  a negative look-ahead for the three characters "<=d" (always true here) - and ``re.UNICODE`` is passed
  as the *count* argument of ``sub`` (== 32), so at most 32 periods are removed;
* the contraction table is the original one, including entries that can never match after
  lower-casing ("Im", "Ive") and the odd ``"somebody'd": "somebodyd"`` mapping.
"""
from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Iterable

__all__ = [
    "CONTRACTIONS",
    "MANUAL_MAP",
    "ARTICLES",
    "PUNCT",
    "QUESTION_TYPES",
    "clean_whitespace",
    "process_punctuation",
    "process_digit_article",
    "normalize_answer",
    "answer_type",
    "question_type",
]

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}

MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES = ("a", "an", "the")

# The original pattern, typo included: "(?!<=" is a negative LOOK-AHEAD for "<=\d", not a look-behind.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
         ",", "?", "!")


def clean_whitespace(text: str) -> str:
    """vqaEval's first step on every answer: newlines and tabs become spaces, then strip."""
    return str(text).replace("\n", " ").replace("\t", " ").strip()


# Both steps are pure functions of a string, and answers repeat ("yes", "2", colour names): cached, scoring
# 440,000 questions takes seconds instead of minutes. 16,384 strings of each kind: a few MB at most.
_NORMALISED_CACHE = 1 << 14


@functools.lru_cache(maxsize=_NORMALISED_CACHE)
def process_punctuation(in_text: str) -> str:
    out_text = in_text
    has_digit_comma = COMMA_STRIP.search(in_text) is not None
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or has_digit_comma:
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    # re.UNICODE (== 32) lands in the `count` slot in the original code: at most 32 substitutions.
    out_text = PERIOD_STRIP.sub("", out_text, int(re.UNICODE))
    return out_text


@functools.lru_cache(maxsize=_NORMALISED_CACHE)
def process_digit_article(in_text: str) -> str:
    out = []
    for word in in_text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            out.append(word)
    out = [CONTRACTIONS.get(w, w) for w in out]
    return " ".join(out)


def normalize_answer(text: str) -> str:
    """Whitespace clean-up, then processPunctuation and processDigitArticle (as vqaEval applies them)."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def _is_number(text: str) -> bool:
    t = text.replace(",", "")
    try:
        float(t)
    except ValueError:
        return False
    return t not in ("nan", "inf", "-inf", "infinity", "+inf")


def answer_type(answers: Iterable[str]) -> str:
    """VQA answer type from the annotators' answers: the most common normalised answer decides.

    "yes/no" when it is yes or no, "number" when it is numeric (after "two" -> "2"), else "other".
    """
    normed = [normalize_answer(a) for a in answers if str(a).strip()]
    if not normed:
        return "other"
    counts = Counter(normed)
    best = max(counts.values())
    # deterministic tie-break: first answer (in the given order) reaching the top count
    top = next(a for a in normed if counts[a] == best)
    if top in ("yes", "no"):
        return "yes/no"
    if _is_number(top):
        return "number"
    return "other"


# The VQA v2 question types (mscoco_question_types.txt) plus the easy-VQA phrasings.
QUESTION_TYPES = (
    "how many", "is the", "what", "what color is the", "what is the", "is this", "is this a",
    "what is", "are the", "what kind of", "is there a", "what type of", "is it", "what are the",
    "where is the", "is there", "does the", "what color are the", "are these", "are there", "which",
    "is", "what is the man", "are", "how", "does this", "what is on the", "what does the",
    "how many people are", "what is in the", "what is this", "do", "what are", "are they",
    "what time", "what sport is", "are there any", "is he", "what color is", "why", "where are the",
    "what color", "who is", "what animal is", "is the woman", "is this an", "do you",
    "how many people are in", "what room is", "has", "is this person", "what is the woman",
    "can you", "why is the", "is the man", "what is the person", "what brand", "what number is",
    "is the person", "what is the name", "could", "was", "what is the color of the", "is that a",
    "what are the people", "where", "who", "when",
    # easy-VQA
    "what shape is", "what shape is the", "what shape does", "does the image contain",
    "is there not a", "is there not", "is a", "is no", "what is the color of",
)
_QT_WORDS = sorted({tuple(t.split()) for t in QUESTION_TYPES}, key=len, reverse=True)
_WORD_RE = re.compile(r"[a-z0-9']+")


QUESTION_TYPE_MAX_CHARS = 60  # the stored column's size (DatasetItem / Prediction.question_type)


def question_type(question: str) -> str:
    """VQA-style question type: the longest known prefix (whole words), else the first 3 words (at most
    ``QUESTION_TYPE_MAX_CHARS`` characters: a 500-character "word" must not overflow the column)."""
    words = _WORD_RE.findall(str(question).lower())
    if not words:
        return ""
    for qt in _QT_WORDS:
        if tuple(words[: len(qt)]) == qt:
            return " ".join(qt)
    return " ".join(words[:3])[:QUESTION_TYPE_MAX_CHARS].rstrip()
