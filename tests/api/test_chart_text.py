"""Text alternatives of the exploration charts (issue 17.3): the caption's key numbers and the data table."""
import pytest

from piggyback.templatetags.pb_forms import chart_rows, chart_summary


def test_chart_summary_per_kind():
    top = {"labels": ["yes", "no", "red", "blue"], "values": [40, 35, 10, 5]}
    assert chart_summary(top, "top") == "Most frequent: yes (40), no (35), red (10); 4 bars in all."
    share = {"labels": ["yes/no", "other"], "values": [30, 10]}
    assert chart_summary(share, "share") == "yes/no: 30 (75 %); other: 10 (25 %)."
    hist = {"labels": ["3", "4", "5", "6"], "values": [2, 9, 4, 1]}
    assert chart_summary(hist, "hist") == "Most often 4 (9 questions); from 3 to 6."
    assert chart_summary({}, "top") == "No data." and chart_summary(None, "share") == "No data."
    assert chart_rows(top)[1] == ("no", 35)


@pytest.mark.django_db
def test_dataset_page_has_a_caption_and_table_for_every_chart(client, owner, project):
    from datasets_app.charts import compute_stats
    from datasets_app.models import Dataset

    items = [{"question": "what color is the circle?", "answers": ["red"] * 10, "answer_type": "other",
              "question_type": "what color is the"},
             {"question": "is there a circle?", "answers": ["yes"] * 10, "answer_type": "yes/no",
              "question_type": "is there a"}]
    ds = Dataset.objects.create(project=project, name="d", status="succeeded", images_file="x.zip",
                                questions_file="x.csv", stats=compute_stats(items),
                                counts={"rows_in": 2, "rows_kept": 2, "images_in": 1, "images_kept": 1})
    client.force_login(owner)
    html = client.get(f"/datasets/{ds.pk}/").content.decode()
    for chart in ("chart-answers", "chart-length", "chart-types", "chart-qtypes"):
        assert f'<canvas id="{chart}" role="img" aria-labelledby="{chart}-title" aria-describedby="{chart}-caption">' in html
        assert f'id="{chart}-caption"' in html
    assert html.count("The numbers behind the chart") == 4
    assert "yes/no: 1 (50 %); other: 1 (50 %)." in html
