"""Issue 11.5: gpu_worker.metrics.vqa_score equals an independent re-implementation of the official
VQA accuracy (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py, ``VQAEval.evaluate``,
``processPunctuation``, ``processDigitArticle``) on thousands of generated questions, including the
branch where the ten answers are identical (then nothing but whitespace is normalised), and answers
are normalised at upload the way the VQAv2 annotations were.

The reference below is written from the official algorithm and shares no code with gpu_worker: answer
records are dicts (as in the annotation file) and "the other nine" are found by dict inequality, as the
official loop does; its contraction table is a subset, and the generated words stay inside it.
"""
import random
import re

import pytest

from gpu_worker.metrics import vqa_score

# ---- the reference, following vqaEval.py ------------------------------------------------------------
REF_CONTRACTIONS = {"dont": "don't", "cant": "can't", "isnt": "isn't", "whats": "what's", "youre": "you're",
                    "wont": "won't", "thats": "that's"}
REF_MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                  "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
REF_ARTICLES = ["a", "an", "the"]
REF_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
REF_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
REF_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
             "?", "!"]


def ref_process_punctuation(in_text):
    out_text = in_text
    for p in REF_PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (re.search(REF_COMMA_STRIP, in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    out_text = REF_PERIOD_STRIP.sub("", out_text, re.UNICODE)   # sic: re.UNICODE lands in `count`
    return out_text


def ref_process_digit_article(in_text):
    out_text = []
    for word in in_text.lower().split():
        word = REF_MANUAL_MAP.setdefault(word, word)
        if word not in REF_ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in REF_CONTRACTIONS:
            out_text[word_id] = REF_CONTRACTIONS[word]
    return " ".join(out_text)


def ref_accuracy(res_ans, gt_answer_texts):
    """One question of VQAEval.evaluate(): returns the accuracy in [0, 1]."""
    answers = [{"answer": a, "answer_id": i + 1} for i, a in enumerate(gt_answer_texts)]
    for ans_dic in answers:
        ans_dic["answer"] = ans_dic["answer"].replace("\n", " ").replace("\t", " ").strip()
    res_ans = res_ans.replace("\n", " ").replace("\t", " ").strip()
    gt_acc = []
    gt_answers = [ans["answer"] for ans in answers]
    if len(set(gt_answers)) > 1:
        for ans_dic in answers:
            ans_dic["answer"] = ref_process_punctuation(ans_dic["answer"])
            ans_dic["answer"] = ref_process_digit_article(ans_dic["answer"])
        res_ans = ref_process_punctuation(res_ans)
        res_ans = ref_process_digit_article(res_ans)
    for gt_ans_datum in answers:
        other_gt_ans = [item for item in answers if item != gt_ans_datum]
        matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
        gt_acc.append(min(1, float(len(matching_ans)) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


# ---- generated cases ----------------------------------------------------------------------------------
STEMS = ["yes", "no", "two", "2", "one", "1", "zero", "none", "the dog", "a dog", "dog", "Dog", "DOG", "an apple",
         "red", "red and white", "dont know", "don't know", "whats up", "cant", "1,000", "1000", "3.5", "3 5",
         "t-shirt", "t shirt", "tshirt", "left.", "left", "left!", "(left)", "left?", "ten", "10", "the", "",
         "black/white", "black white", "mr. smith", "mr smith", "u.s.", "us", "isnt", "youre", "a/b/c",
         "e.g. this", "eg this", "#1", "n't", "well,", "3,4", "yes.", "yes,", "Yes", " yes ", "yes\n", "yes\tno"]


def _variant(rng, text):
    r = rng.random()
    if r < 0.15:
        return text.upper()
    if r < 0.25:
        return f"  {text} "
    if r < 0.32:
        return text + rng.choice([".", "?", "!", " .", ",", ")"])
    if r < 0.38:
        return rng.choice(["the ", "a ", "an "]) + text
    return text


def _case(rng):
    kind = rng.random()
    if kind < 0.2:       # the ten-identical branch (nothing normalised but whitespace)
        answers = [rng.choice(STEMS)] * 10
    elif kind < 0.5:     # a few distinct answers with surface variants of each other
        base = rng.sample(STEMS, rng.randint(1, 3))
        answers = [_variant(rng, rng.choice(base)) for _ in range(10)]
    else:
        answers = [_variant(rng, rng.choice(STEMS)) for _ in range(10)]
    pred = _variant(rng, rng.choice(answers if rng.random() < 0.6 else STEMS))
    return pred, answers


def test_reference_reproduces_the_documented_examples():
    # ten identical answers: compared as typed (after whitespace), so case matters
    assert ref_accuracy("yes", ["Yes"] * 10) == 0.0 and ref_accuracy(" Yes\n", ["Yes"] * 10) == 1.0
    # differing answers: normalised, 2 matches of 10 -> 0.6 (8 subsets of 2/3, 2 subsets of 1/3)
    assert ref_accuracy("two", ["2", "2."] + ["3"] * 8) == pytest.approx(0.6)
    assert ref_accuracy("2", ["2"] * 3 + ["4"] * 7) == 1 - 3 * (1 - 2 / 3) / 10


def test_vqa_score_equals_the_official_algorithm_on_generated_cases():
    rng = random.Random(20240611)
    cases = [_case(rng) for _ in range(6000)]
    mismatches = [(p, a, vqa_score(p, a), ref_accuracy(p, a)) for p, a in cases
                  if abs(vqa_score(p, a) - ref_accuracy(p, a)) > 1e-12]
    assert not mismatches, mismatches[:5]
    # the generator exercises every branch and every score level
    levels = {round(ref_accuracy(p, a), 4) for p, a in cases}
    assert levels == {0.0, 0.3, 0.6, 0.9, 1.0}   # 0, 1, 2, 3 and 4+ matching answers
    assert sum(1 for _, a in cases if len(set(a)) == 1) > 500


def test_answers_are_normalised_at_upload_like_the_vqav2_annotations(tmp_path):
    """Uploaded answers go through processPunctuation + processDigitArticle (as the VQAv2 annotations'
    ``multiple_choice_answer`` / answers were), then are filled to ten."""
    import zipfile

    from PIL import Image

    from gpu_worker.cleaning import clean_dataset

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as zf:
        zf.write(tmp_path / "a.png", "a.png")
    (tmp_path / "q.csv").write_text("image,question,answers\n"
                                    "a.png,How many?,Two|the Dog.|Don't know\n", encoding="utf-8")
    result = clean_dataset(tmp_path / "q.csv", tmp_path / "images.zip", tmp_path / "out")
    answers = result.items[0]["answers"]
    assert len(answers) == 10
    assert set(answers) == {ref_process_digit_article(ref_process_punctuation(a))
                            for a in ("Two", "the Dog.", "Don't know")} == {"2", "dog", "don't know"}
