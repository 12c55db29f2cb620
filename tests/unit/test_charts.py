"""Exploration statistics (pandas): exact numbers on a small hand-checked set."""
from datasets_app.charts import compute_stats, main_answer


def test_stats_by_hand():
    items = [
        {"question": "What colour is it?", "answers": ["red"] * 6 + ["blue"] * 4, "answer_type": "other",
         "question_type": "what color", "image": "1.png"},
        {"question": "Is it round?", "answers": ["yes", "no"] * 5, "answer_type": "yes/no",
         "question_type": "is it", "image": "1.png"},
        {"question": "How many?", "answers": ["2"] * 10, "answer_type": "number", "question_type": "how many",
         "image": "2.png"},
        {"question": "What colour is this one?", "answers": ["blue"] * 10, "answer_type": "", "question_type": "",
         "image": "3.png"},
        {"question": " ".join(["word"] * 30), "answers": [], "answer_type": "", "question_type": "what color",
         "image": "3.png"},
    ]
    s = compute_stats(items)
    assert main_answer(["yes", "no"] * 5) == "yes"  # ties go to the first answer given
    assert (s["questions"], s["images"], s["labelled"], s["distinct_answers"]) == (5, 3, 4, 4)
    assert s["mean_question_words"] == round((4 + 3 + 2 + 5 + 30) / 5, 2)
    assert s["top_answers"] == {"labels": ["red", "yes", "2", "blue"], "values": [1, 1, 1, 1]}  # first seen first
    assert s["top_answers_share"] == 1.0
    assert s["question_length"]["labels"][-1] == "20+" and s["question_length"]["values"][-1] == 1
    assert sum(s["question_length"]["values"]) == 5 and s["question_length"]["values"][1] == 1  # "How many?"
    assert s["answer_types"] == {"labels": ["yes/no", "number", "other", "(no answer)"], "values": [1, 1, 2, 1]}
    assert s["question_types"] == {"labels": ["what color", "is it", "how many", "(none)"], "values": [2, 1, 1, 1]}
    empty = compute_stats([])
    assert empty["questions"] == 0 and empty["question_length"] == {"labels": [], "values": []}
