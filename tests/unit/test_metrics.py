"""Hand-computed official VQA accuracy cases, including the vqaEval.py quirks."""
import pytest

from gpu_worker.metrics import evaluate, exact_match, majority_answer, vqa_score
from gpu_worker.vqa_normalize import answer_type, normalize_answer, process_digit_article, process_punctuation, question_type


def ten(*pairs):
    out = []
    for answer, n in pairs:
        out += [answer] * n
    assert len(out) == 10
    return out


@pytest.mark.parametrize("k,expected", [
    # k of 10 answers match. Leaving out a matching answer leaves k-1 matches, otherwise k:
    (0, 0.0),
    (1, (1 * 0 + 9 * (1 / 3)) / 10),          # 0.3
    (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),    # 0.6
    (3, (3 * (2 / 3) + 7 * 1) / 10),          # 0.9
    (4, 1.0),
    (10, 1.0),
])
def test_leave_one_out_average(k, expected):
    answers = ten(("red", k), ("blue", 10 - k)) if k < 10 else ["red"] * 10
    assert vqa_score("red", answers) == pytest.approx(expected)


def test_two_of_ten_is_point_six():
    assert vqa_score("cat", ten(("cat", 2), ("dog", 8))) == pytest.approx(0.6)


def test_identical_answers_are_not_normalised():
    # all ten identical -> no punctuation/digit processing at all, not even lower-casing
    assert vqa_score("yes", ["yes"] * 10) == 1.0
    assert vqa_score("Yes", ["yes"] * 10) == 0.0
    assert vqa_score("two", ["2"] * 10) == 0.0
    # whitespace clean-up always happens
    assert vqa_score("  yes\n", ["yes"] * 10) == 1.0


def test_differing_answers_are_normalised_prediction_too():
    answers = ten(("two", 5), ("2", 5))  # differ -> both become "2"
    assert vqa_score("Two", answers) == 1.0
    assert vqa_score("2.", answers) == 1.0
    answers = ten(("a dog", 3), ("the dog!", 3), ("cat", 4))
    assert vqa_score("Dog", answers) == 1.0  # 6 "dog" after normalisation


def test_fewer_than_ten_answers():
    # 3 answers: threshold min(3, n-1) = 2. Leave out a "red": 1/2; the other "red": 1/2; "blue": 2/2.
    assert vqa_score("red", ["red", "red", "blue"]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # single answer: exact test
    assert vqa_score("circle", ["circle"]) == 1.0
    assert vqa_score("square", ["circle"]) == 0.0
    # 5 answers, threshold 3 as official: 2 matches -> (2*(1/3) + 3*(2/3)) / 5
    assert vqa_score("x", ["x", "x", "y", "z", "w"]) == pytest.approx((2 / 3 + 2) / 5)
    with pytest.raises(ValueError):
        vqa_score("x", [])


def test_punctuation_quirks():
    # a mark touching a space is deleted, otherwise replaced by a space
    assert process_punctuation("hello, world") == "hello world"
    assert process_punctuation("hello,world") == "hello world"
    # digit-comma-digit anywhere: every mark is deleted
    assert process_punctuation("1,000 (approx)") == "1000 approx"
    assert process_punctuation("a-b 1,2") == "ab 12"
    # periods not followed by a digit go; decimals stay; the look-behind typo removes "3." too
    assert process_punctuation("3.5") == "3.5"
    assert process_punctuation("3.") == "3"
    assert process_punctuation("mr. x.") == "mr x"
    # count=re.UNICODE (32): only the first 32 periods are removed
    assert process_punctuation("." * 40) == "." * 8
    # the "touches a space" test looks at the ORIGINAL text
    # ("a -b" after the ";" step would delete "-"; the original has no " -", so it becomes a space)
    assert process_punctuation("a;-b") == "a  b"
    assert process_punctuation("a;b ;c") == "ab c"


def test_digit_article_and_contractions():
    assert process_digit_article("The Two dogs") == "2 dogs"
    assert process_digit_article("none") == "0"
    assert process_digit_article("an apple a day") == "apple day"
    assert process_digit_article("dont know") == "don't know"
    assert process_digit_article("Im") == "im"  # table entry "Im" never matches after lower-casing
    assert normalize_answer(" Ten\tApples.\n") == "10 apples"


def test_answer_and_question_types():
    assert answer_type(["yes"] * 7 + ["no"] * 3) == "yes/no"
    assert answer_type(["two"] * 6 + ["3"] * 4) == "number"
    assert answer_type(["red"] * 10) == "other"
    assert question_type("What color is the shape?") == "what color is the"
    assert question_type("How many people are in the room?") == "how many people are in"
    assert question_type("Is there not a red shape?") == "is there not a"
    assert question_type("Please describe this") == "please describe this"
    assert question_type("") == ""


def test_majority_and_exact_match():
    assert majority_answer(ten(("red", 4), ("Blue", 6))) == "blue"
    assert exact_match("BLUE", ten(("red", 4), ("blue", 6))) == 1.0
    assert exact_match("red", ten(("red", 4), ("blue", 6))) == 0.0


def test_evaluate_breakdown():
    items = [
        {"answers": ["yes"] * 10, "answer_type": "yes/no", "question_type": "is there a"},
        {"answers": ["no"] * 10, "answer_type": "yes/no", "question_type": "is there a"},
        {"answers": ten(("2", 2), ("3", 8)), "answer_type": "number", "question_type": "how many"},
        {"answers": [], "answer_type": "", "question_type": ""},  # unlabelled: skipped
        {"answers": ["red"] * 10, "question": "What color is the shape?"},  # types derived
    ]
    preds = ["yes", "yes", "2", "anything", "red"]
    r = evaluate(preds, items)
    assert r["count"] == 4 and r["skipped_unlabelled"] == 1
    assert r["vqa_accuracy"] == round(100 * (1 + 0 + 0.6 + 1) / 4, 2) == 65.0
    assert r["exact_match"] == 50.0
    assert r["per_answer_type"] == {"number": 60.0, "other": 100.0, "yes/no": 50.0}
    assert r["per_question_type"]["is there a"] == 50.0
    assert r["per_question_type"]["what color is the"] == 100.0
    assert r["confusions"] == [{"expected": "3", "predicted": "2", "count": 1},
                               {"expected": "no", "predicted": "yes", "count": 1}]
    with pytest.raises(ValueError):
        evaluate(["a"], [])
