"""Answer heads are resized by answer STRING (issue 11.2): answers the checkpoint knows keep their trained
rows, new answers start fresh. transformers' ``resize_num_qa_labels`` keeps rows by position, which gave
new answer i the weights of pretrained answer i."""
import pytest
import torch
import transformers as T

from gpu_worker.models import hf_common as hc
from gpu_worker.models.lxmert import resize_answer_head
from gpu_worker.models.tiny import make_tiny_checkpoint

PRETRAINED = ["yes", "no", "circle", "red"]


def _lxmert(tmp_path, labels=None):
    folder = make_tiny_checkpoint("lxmert", str(tmp_path / "lx"))
    model = T.LxmertForQuestionAnswering.from_pretrained(folder)
    if labels:
        hc.set_answer_labels(model.config, labels)
    return model


def test_lxmert_head_keeps_rows_by_answer_string(tmp_path):
    model = _lxmert(tmp_path, PRETRAINED)
    old = model.answer_head.logit_fc[-1]
    old_w, old_b = old.weight.detach().clone(), old.bias.detach().clone()
    answers = ["red", "blue", "yes", "green", "triangle"]
    resize_answer_head(model, answers)
    new = model.answer_head.logit_fc[-1]
    assert new.out_features == 5 and model.config.num_qa_labels == 5 and model.num_qa_labels == 5
    assert model.config.id2label == dict(enumerate(answers))
    for i, a in enumerate(answers):
        if a in PRETRAINED:   # trained row, found by its string (not by position)
            j = PRETRAINED.index(a)
            assert torch.equal(new.weight[i], old_w[j]) and new.bias[i] == old_b[j]
        else:                 # fresh: not any pretrained row, zero bias (LXMERT's own initialisation)
            assert not any(torch.allclose(new.weight[i], old_w[j]) for j in range(len(PRETRAINED)))
            assert float(new.bias[i].detach()) == 0.0
    # "blue" sits at index 1, where "no" was: it must not inherit "no"'s weights
    assert not torch.allclose(new.weight[1], old_w[1])
    out = model(input_ids=torch.tensor([[2, 10, 3]]), visual_feats=torch.randn(1, 4, 24),
                visual_pos=torch.rand(1, 4, 4)).question_answering_score
    assert out.shape == (1, 5)


def test_lxmert_head_without_answer_strings_starts_fresh(tmp_path):
    """unc-nlp/lxmert-base-uncased's 9,500-way head has placeholder labels (LABEL_i): nothing is kept."""
    model = _lxmert(tmp_path)
    assert all(v.startswith("LABEL_") for v in model.config.id2label.values())
    old_w = model.answer_head.logit_fc[-1].weight.detach().clone()
    resize_answer_head(model, ["LABEL_0", "red"])  # even a label named like a placeholder is not matched
    new = model.answer_head.logit_fc[-1]
    assert not torch.allclose(new.weight[0], old_w[0])


def test_label_file_beside_the_weights_names_the_answers(tmp_path):
    import json

    model = _lxmert(tmp_path)
    (tmp_path / "trainval_label2ans.json").write_text(json.dumps(PRETRAINED))
    assert hc.pretrained_answers(model.config, str(tmp_path)) == {a: i for i, a in enumerate(PRETRAINED)}
    assert hc.pretrained_answers(model.config, None) == {}


def test_lxmert_create_uses_the_string_resize(tmp_path, easy_items):
    from gpu_worker.models.lxmert import LxmertAdapter
    from gpu_worker.models.registry import get_spec
    from gpu_worker.models.tiny import make_tiny_backbone

    folder = make_tiny_checkpoint("lxmert", str(tmp_path / "lx2"))
    model = T.LxmertForQuestionAnswering.from_pretrained(folder)
    hc.set_answer_labels(model.config, PRETRAINED)
    model.save_pretrained(folder)
    items, root = easy_items
    params = dict(get_spec("lxmert").default_params, feature_backbone=make_tiny_backbone(str(tmp_path / "bb")))
    adapter = LxmertAdapter.create(get_spec("lxmert"), items, root, params, source=folder, device="cpu")
    head = adapter.model.answer_head.logit_fc[-1]
    common = [a for a in PRETRAINED if a in adapter.label2id]
    assert common  # easy-VQA answers include yes / no
    for a in common:
        old_row = model.answer_head.logit_fc[-1].weight[PRETRAINED.index(a)]
        assert torch.equal(head.weight[adapter.label2id[a]], old_row)
    assert adapter.extractor.describe()["weights"] == "random tiny test backbone (not pretrained)"


def test_training_without_backbone_weights_fails_clearly(tmp_path, easy_items, monkeypatch):
    from gpu_worker import UserFacingError
    from gpu_worker import features as F
    from gpu_worker.train import train_model

    monkeypatch.setattr(F, "default_backbone", lambda: None)
    folder = make_tiny_checkpoint("visualbert", str(tmp_path / "vb"))
    items, root = easy_items
    with pytest.raises(UserFacingError, match="region features.*microsoft/resnet-50"):
        train_model("visualbert", items, root, str(tmp_path / "run"), {"epochs": 1}, source=folder, device="cpu")


def test_feature_families_offered_only_with_extractor_weights(tmp_path, monkeypatch):
    from gpu_worker.models.registry import availability, get_spec
    from gpu_worker.models.tiny import make_tiny_backbone

    spec = get_spec("lxmert")
    monkeypatch.setattr("gpu_worker.models.registry._weights_availability",
                        lambda s: {"available": True, "reason": "Weights found."})
    monkeypatch.delenv("PIGGYBACK_FEATURE_BACKBONE", raising=False)
    monkeypatch.setattr("gpu_worker.features.default_backbone", lambda: None)
    av = availability(spec)
    assert av["available"] is False and "region features" in av["reason"] and "microsoft/resnet-50" in av["reason"]
    monkeypatch.setattr("gpu_worker.features.default_backbone",
                        lambda: make_tiny_backbone(str(tmp_path / "bb")))
    av = availability(spec)
    assert av["available"] is True and "Region features" in av["reason"]
