"""Every pretrained family answers exactly like its documented transformers recipe (issue 11.1).

For each family the same local checkpoint folder, images and questions go through
(a) PiggyBack (``load_model`` -> ``predict``, batched, greedy: ``top_k=1``, ``num_beams=1``) and
(b) the plain transformers recipe for that checkpoint, one question at a time:
``processor -> model -> generate (greedy) -> batch_decode(skip_special_tokens=True)`` for generators,
``processor/tokenizer -> model -> argmax -> config.id2label`` for classifiers.
Generators must agree token for token (the decoded text before PiggyBack's VQA normalisation, captured
at ``merge_candidates``), classifiers label for label.

The tiny checkpoints mirror the hub ones (``gpu_worker.models.tiny.MIRRORS`` names the files: e.g.
Salesforce/blip2-opt-2.7b config.json + generation_config.json, the id list in huggingface/transformers
tests/models/blip_2/test_modeling_blip_2.py); ``test_tiny_checkpoints_mirror_the_hub_settings`` checks
the settings that change answers. Where a stop token must occur for a test to be able to fail, its
output-embedding row is scaled up so greedy decoding meets it (asserted in the test).
"""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from gpu_worker.easyvqa import load_items
from gpu_worker.models import hf_common as hc
from gpu_worker.models.tiny import make_tiny_backbone, make_tiny_checkpoint
from gpu_worker.vqa_normalize import normalize_answer

MAX_NEW = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """10 questions over 6 easy-VQA images plus two non-square copies (ViLT pads them in a batch)."""
    torch.set_num_threads(2)
    items, root = load_items("train", max_images=6, seed=1)
    items = [dict(it) for it in items[:6]]
    extra = tmp_path_factory.mktemp("odd")
    for name, size in (("wide.png", (96, 48)), ("tall.png", (40, 72))):
        with Image.open(os.path.join(root, items[0]["image"])) as im:
            im.convert("RGB").resize(size).save(extra / name)
        items.append({"id": name, "image": str(extra / name), "question": "what color is the shape?",
                      "answers": ["red"] * 10})
    return items, root


def _image(root, it):
    path = it["image"] if os.path.isabs(it["image"]) else os.path.join(root, it["image"])
    with Image.open(path) as im:
        return im.convert("RGB")


def _spy_texts(monkeypatch):
    """Record the raw decoded candidates PiggyBack ranks (before normalisation)."""
    seen: list[list[str]] = []
    real = hc.merge_candidates

    def spy(texts, logprobs, k):
        seen.append(list(texts))
        return real(texts, logprobs, k)

    monkeypatch.setattr(hc, "merge_candidates", spy)
    return seen


def _boost(folder: str, model_cls, token_id: int, factor: float = 6.0) -> None:
    """Scale one output-embedding row so greedy decoding produces that token now and then."""
    model = model_cls.from_pretrained(folder)
    with torch.no_grad():
        head = model.get_output_embeddings() or model.text_decoder.get_output_embeddings()  # BLIP: decoder's
        head.weight[token_id] *= factor
    model.save_pretrained(folder)


def _set_bias(folder: str, token_id: int, value: float) -> None:
    import transformers as T

    model = T.BlipForQuestionAnswering.from_pretrained(folder)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[token_id] = value
    model.save_pretrained(folder)


def _median_stop_gap(folder, items, root, stop_id) -> float:
    """Median over the questions of the smallest gap (after the first answer token) between the best
    logit and the stop token's logit: a bias of that size makes the decoder stop early on about half."""
    import transformers as T

    processor = T.AutoProcessor.from_pretrained(folder)
    model = T.BlipForQuestionAnswering.from_pretrained(folder).eval()
    gaps = []
    for it in items:
        inputs = processor(images=_image(root, it), text=it["question"], return_tensors="pt")
        with torch.no_grad():
            seq = model.generate(**inputs, max_new_tokens=MAX_NEW, num_beams=1, do_sample=False)
            q = model.text_encoder(input_ids=inputs["input_ids"], encoder_hidden_states=model.vision_model(
                pixel_values=inputs["pixel_values"])[0]).last_hidden_state
            logits = model.text_decoder(input_ids=seq, encoder_hidden_states=q).logits[0, 1:]
        gaps.append(float((logits.max(-1).values - logits[:, stop_id]).min()))
    return float(torch.tensor(gaps).median()) + 1e-3


def _centre_vilt_head(folder, items, root) -> None:
    """Subtract the mean logit over the test inputs from the head's bias, so the random model's answer
    depends on the input rather than on a constant offset (the test could not fail otherwise)."""
    import transformers as T

    processor = T.ViltProcessor.from_pretrained(folder)
    model = T.ViltForQuestionAnswering.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = torch.cat([model(**processor(_image(root, it), it["question"], return_tensors="pt")).logits
                            for it in items])
        model.classifier[-1].bias -= logits.mean(0)
    model.save_pretrained(folder)


# ---------------------------------------------------------------------------------------- generators
def _reference_generate(folder, family, items, root):
    import transformers as T

    cls = {"blip": T.BlipForQuestionAnswering, "blip2": T.Blip2ForConditionalGeneration,
           "florence2": T.Florence2ForConditionalGeneration}[family]
    processor = T.AutoProcessor.from_pretrained(folder)
    model = cls.from_pretrained(folder).eval()
    texts, stopped = [], 0
    for it in items:
        prompt = f"Question: {it['question']} Answer:" if family == "blip2" else it["question"]
        inputs = processor(images=_image(root, it), text=prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=MAX_NEW, num_beams=1, do_sample=False)
        if family == "blip2":  # a decoder-only LM returns the prompt too
            out = out[:, inputs["input_ids"].shape[1]:]
        stops = hc.stop_token_ids(model)
        stopped += int(any(int(t) in stops for t in out[0][1:-1]) or out.shape[1] < MAX_NEW)
        texts.append(processor.batch_decode(out, skip_special_tokens=True)[0])
    return texts, stopped


def _piggyback_generate(folder, items, root, monkeypatch):
    from gpu_worker.predict import load_model

    seen = _spy_texts(monkeypatch)
    adapter = load_model(folder, device="cpu")
    preds = adapter.predict(items, root, top_k=1, num_beams=1, max_new_tokens=MAX_NEW, batch_size=4)
    raw = [t for batch in seen for t in batch]
    return preds, raw


@pytest.mark.parametrize("family", ["blip", "blip2", "florence2"])
def test_zero_shot_generators_answer_like_the_transformers_recipe(family, data, tmp_path, monkeypatch):
    import transformers as T

    items, root = data
    folder = make_tiny_checkpoint(family, str(tmp_path / family))
    tok = T.AutoTokenizer.from_pretrained(folder)
    if family == "blip2":   # the OPT stop token is the newline (50118 in blip2-opt-2.7b), not </s>
        _boost(folder, T.Blip2ForConditionalGeneration, tok.convert_tokens_to_ids("\u010a"))
    if family == "blip":  # raise [SEP]'s output bias so that about half the answers end there
        _set_bias(folder, tok.sep_token_id, _median_stop_gap(folder, items, root, tok.sep_token_id))
    ref, stopped = _reference_generate(folder, family, items, root)
    preds, raw = _piggyback_generate(folder, items, root, monkeypatch)
    assert len(raw) == len(items)
    # token for token (decoded; PiggyBack may answer grouped by question length, so compare as multisets)
    assert sorted(r.strip() for r in raw) == sorted(t.strip() for t in ref)
    assert [p["answer"] for p in preds] == [normalize_answer(t) for t in ref]
    assert len({t for t in ref}) > 1, "the tiny model must answer different inputs differently"
    if family in ("blip", "blip2"):
        assert stopped > 0, "some reference answer must end at the stop token, or the test could not fail"


def test_blip2_stops_at_the_checkpoint_stop_token_not_at_eos(tmp_path):
    """The adapter takes its stop tokens from generation_config (OPT: newline), not from </s>."""
    from gpu_worker.predict import load_model

    folder = make_tiny_checkpoint("blip2", str(tmp_path / "b2"))
    adapter = load_model(folder, device="cpu")
    newline = adapter.tokenizer.convert_tokens_to_ids("\u010a")
    assert adapter.stops == [newline] and newline != adapter.tokenizer.eos_token_id
    # training answers end where generation stops (LAVIS appends "\n" to OPT targets)
    enc = adapter.encode([{"image": "x.png", "question": "q?", "answers": ["red"] * 10}], _one_image(tmp_path))
    assert int(enc["answers"][0][-1]) == newline


def _one_image(tmp_path):
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "x.png")
    return str(tmp_path)


# ---------------------------------------------------------------------------------------- classifiers
def _reference_vilt(folder, items, root):
    import transformers as T

    processor = T.ViltProcessor.from_pretrained(folder)
    model = T.ViltForQuestionAnswering.from_pretrained(folder).eval()
    out = []
    for it in items:
        enc = processor(_image(root, it), it["question"], return_tensors="pt")
        with torch.no_grad():
            out.append(model.config.id2label[int(model(**enc).logits.argmax(-1))])
    return out


def _reference_region_model(folder, family, items, root):
    """VisualBERT / LXMERT: tokenizer -> the exported extractor's region features -> model -> argmax."""
    import transformers as T

    from gpu_worker import features as F

    tok = T.AutoTokenizer.from_pretrained(folder)
    extractor = F.load_extractor(folder, device="cpu")
    cls = T.VisualBertForQuestionAnswering if family == "visualbert" else T.LxmertForQuestionAnswering
    model = cls.from_pretrained(folder).eval()
    out = []
    for it in items:
        img = _image(root, it)
        reg = extractor([img])[0]
        enc = tok(it["question"], return_tensors="pt")
        feats = reg["features"][None]
        with torch.no_grad():
            if family == "visualbert":
                ones = torch.ones(feats.shape[:2], dtype=torch.long)
                logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                               visual_embeds=feats, visual_attention_mask=ones, visual_token_type_ids=ones).logits
            else:
                w, h = img.size
                pos = (reg["boxes"] / torch.tensor([w, h, w, h], dtype=torch.float)).clamp(0, 1)[None]
                logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                               visual_feats=feats, visual_pos=pos).question_answering_score
        out.append(model.config.id2label[int(logits.argmax(-1))])
    return out


def test_vilt_vqa_zero_shot_answers_like_the_recipe(data, tmp_path):
    from gpu_worker.predict import load_model

    items, root = data
    folder = make_tiny_checkpoint("vilt", str(tmp_path / "vilt"))
    _centre_vilt_head(folder, items, root)
    adapter = load_model(folder, device="cpu")
    assert adapter.spec.key == "vilt-vqa"
    preds = adapter.predict(items, root, top_k=1, batch_size=4)
    ref = _reference_vilt(folder, items, root)
    assert [p["answer"] for p in preds] == ref
    assert len(set(ref)) > 1


@pytest.mark.parametrize("family", ["vilt", "visualbert", "lxmert", "blip"])
def test_fine_tuned_export_answers_like_the_recipe(family, data, tmp_path, monkeypatch):
    """Fine-tune a few steps, export (the run's model folder = the ZIP's content), and ask both ways."""
    from gpu_worker.train import train_model

    items, root = data
    ckpt = make_tiny_checkpoint(family, str(tmp_path / "tiny"))
    params = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "val_fraction": 0.0, "patience": 0,
              "warmup_ratio": 0.0, "feature_cache_dir": str(tmp_path / "features"), "auto_batch_size": False}
    if family in ("visualbert", "lxmert"):
        params["feature_backbone"] = make_tiny_backbone(str(tmp_path / "backbone"))
    train_model(family, items, root, str(tmp_path / "run"), params, source=ckpt, device="cpu")
    folder = os.path.join(str(tmp_path / "run"), "model")
    if family == "blip":
        ref, _ = _reference_generate(folder, "blip", items, root)
        preds, raw = _piggyback_generate(folder, items, root, monkeypatch)
        assert sorted(r.strip() for r in raw) == sorted(t.strip() for t in ref)
        assert [p["answer"] for p in preds] == [normalize_answer(t) for t in ref]
        return
    from gpu_worker.predict import load_model

    adapter = load_model(folder, device="cpu")
    preds = adapter.predict(items, root, top_k=1, batch_size=4)
    ref = _reference_vilt(folder, items, root) if family == "vilt" else \
        _reference_region_model(folder, family, items, root)
    assert [p["answer"] for p in preds] == ref


# ---------------------------------------------------------------------------------------- the mirrors
def test_tiny_checkpoints_mirror_the_hub_settings(tmp_path):
    """The settings that change answers, as published in the hub files named in tiny.MIRRORS."""
    import transformers as T

    from gpu_worker.models.tiny import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, MIRRORS

    assert set(MIRRORS) == {"vilt", "visualbert", "lxmert", "blip", "blip2", "florence2"}
    # ViLT (dandelin/vilt-b32-finetuned-vqa): shortest edge + size_divisor = patch, mean = std = 0.5, bicubic
    f = make_tiny_checkpoint("vilt", str(tmp_path / "vilt"))
    p = T.AutoProcessor.from_pretrained(f)
    cfg = T.AutoConfig.from_pretrained(f)
    ip = p.image_processor
    assert list(ip.image_mean) == [0.5] * 3 and list(ip.image_std) == [0.5] * 3 and ip.resample == 3
    assert ip.size_divisor == cfg.patch_size and ip.size["shortest_edge"] == cfg.image_size
    assert cfg.max_position_embeddings == 40 and p.tokenizer.model_max_length == 40
    assert all(isinstance(v, str) and not v.startswith("LABEL_") for v in cfg.id2label.values())
    # BLIP (Salesforce/blip-vqa-base): [DEC] starts the answer, [SEP] ends it, CLIP mean/std
    f = make_tiny_checkpoint("blip", str(tmp_path / "blip"))
    p = T.AutoProcessor.from_pretrained(f)
    tc = T.AutoConfig.from_pretrained(f).text_config
    assert p.tokenizer.bos_token == "[DEC]" and tc.bos_token_id == p.tokenizer.convert_tokens_to_ids("[DEC]")
    assert tc.sep_token_id == p.tokenizer.sep_token_id and tc.pad_token_id == p.tokenizer.pad_token_id == 0
    assert list(p.image_processor.image_mean) == CLIP_MEAN and list(p.image_processor.image_std) == CLIP_STD
    # BLIP-2 (Salesforce/blip2-opt-2.7b): stop at newline, </s> is the BOS, image tokens first
    f = make_tiny_checkpoint("blip2", str(tmp_path / "blip2"))
    p = T.AutoProcessor.from_pretrained(f)
    cfg = T.AutoConfig.from_pretrained(f)
    gen = T.GenerationConfig.from_pretrained(f)
    newline = p.tokenizer.convert_tokens_to_ids("\u010a")
    assert gen.eos_token_id == cfg.text_config.eos_token_id == newline
    assert gen.bos_token_id == p.tokenizer.convert_tokens_to_ids("</s>") == 2 and gen.pad_token_id == 1
    ids = p(images=Image.new("RGB", (32, 32)), text="Question: what? Answer:")["input_ids"][0]
    n = cfg.num_query_tokens
    assert ids[:n] == [cfg.image_token_id] * n and ids[n] == 2
    assert cfg.image_token_id == len(p.tokenizer) - 1  # <image> appended after the vocabulary
    assert list(p.image_processor.image_mean) == CLIP_MEAN
    # Florence-2 (florence-community/Florence-2-base-ft): BART generation settings, ImageNet mean/std
    f = make_tiny_checkpoint("florence2", str(tmp_path / "f2"))
    p = T.AutoProcessor.from_pretrained(f)
    gen = T.GenerationConfig.from_pretrained(f)
    assert (gen.decoder_start_token_id, gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (2, 0, 2, 1)
    assert (gen.forced_bos_token_id, gen.forced_eos_token_id, gen.no_repeat_ngram_size) == (0, 2, 3)
    assert list(p.image_processor.image_mean) == IMAGENET_MEAN and list(p.image_processor.image_std) == IMAGENET_STD
    assert p.image_processor.do_center_crop is False
