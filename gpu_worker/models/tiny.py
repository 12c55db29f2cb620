"""Tiny random checkpoints of every transformers family, for tests and offline demos.

``make_tiny_checkpoint(family, folder)`` builds a randomly initialised model from a tiny config
(hidden 32, 1-2 layers), a matching processor/tokenizer made with the ``tokenizers`` library (no
download), and ``save_pretrained``-s both into ``folder``. The folder then loads like a hub checkpoint:
``get_adapter_class(key).create(spec, items, root, params, source=folder)``.

Families: vilt, visualbert, lxmert, blip, blip2, florence2. The vocabulary covers easy-VQA words and
falls back to single characters, so any English question tokenises.

Every builder mirrors the hub checkpoint PiggyBack uses for that family in everything except size: the
special tokens and their roles, ``generation_config`` (stop tokens, decoder start, forced tokens,
n-gram rule), the image-token layout, the processor's resize rule, resample filter, mean and std, and
the style of the label set. Each builder names the files it mirrors (``MIRRORS``); the values are the
published ones, and ``tests/unit/test_parity.py`` checks the tiny folders against them.
"""
from __future__ import annotations

import json
import os
import string

import torch

FAMILIES = ("vilt", "visualbert", "lxmert", "blip", "blip2", "florence2")

# The real checkpoint files each tiny builder mirrors (hub repo: files). Values quoted where they matter.
MIRRORS = {
    "vilt": "dandelin/vilt-b32-finetuned-vqa: preprocessor_config.json (ViltImageProcessor, size 384 shortest "
            "edge, size_divisor 32 = patch size, resample 3 bicubic, image_mean = image_std = [0.5, 0.5, 0.5]); "
            "config.json (max_position_embeddings 40, max_image_length -1, id2label = 3,129 answer strings); "
            "tokenizer_config.json (BertTokenizer, do_lower_case, model_max_length 40)",
    "visualbert": "uclanlp/visualbert-vqa-coco-pre: config.json (visual_embedding_dim 2048, no answer head); "
                  "the repo ships no tokenizer (bert-base-uncased WordPiece is used)",
    "lxmert": "unc-nlp/lxmert-base-uncased: config.json (visual_feat_dim 2048, visual_pos_dim 4, num_qa_labels "
              "9500 without answer strings in id2label); tokenizer_config.json (BertTokenizer, uncased)",
    "blip": "Salesforce/blip-vqa-base: preprocessor_config.json (BlipImageProcessor 384 x 384, resample 3, "
            "OpenAI-CLIP mean [0.48145466, 0.4578275, 0.40821073] / std [0.26862954, 0.26130258, 0.27577711]); "
            "tokenizer_config.json (BertTokenizer, bos_token [DEC]); config.json text_config (bos_token_id = "
            "[DEC] starts the answer decoder, sep_token_id = [SEP] ends it, pad_token_id 0)",
    "blip2": "Salesforce/blip2-opt-2.7b: config.json (num_query_tokens 32, image_token_index 50265 = <image>, "
             "text_config.eos_token_id 50118 = the newline token); generation_config.json (bos 2, eos 50118, "
             "pad 1); tokenizer_config.json (GPT2Tokenizer, add_bos_token, bos = eos = </s>, pad <pad>); "
             "preprocessor_config.json (BlipImageProcessor 224 x 224, OpenAI-CLIP mean/std). The expected ids "
             "[50265 x 32, 2, ..., 50118] of huggingface/transformers tests/models/blip_2/test_modeling_blip_2.py "
             "(integration test) show the layout: image tokens, then </s> as BOS, then the text; stop at newline",
    "florence2": "florence-community/Florence-2-base-ft (conversion of microsoft/Florence-2-base-ft): "
                 "preprocessor_config.json (768 x 768, no centre crop, resample 3, ImageNet mean [0.485, 0.456, "
                 "0.406] / std [0.229, 0.224, 0.225], image_seq_length 577 = 1 + 24 x 24); generation_config.json "
                 "(decoder_start_token_id 2, bos 0, eos 2, pad 1, forced_bos_token_id 0, forced_eos_token_id 2, "
                 "no_repeat_ngram_size 3, num_beams 3); BartTokenizer (<s> 0, <pad> 1, </s> 2, <unk> 3, <image>)",
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

IMAGE_SIZE = 64
PATCH = 16
HIDDEN = 32

_WORDS = (
    "what is the shape color colour of in there a an image does contain not circle rectangle triangle "
    "red green blue yellow gray grey teal black brown white yes no how many which where who why are "
    "picture this that it question answer"
).split()
_BPE_CORPUS = [
    "what is the color of the shape? what shape is in the image? is there a red circle? yes no",
    "does the image contain a triangle? which colour is the rectangle? gray teal black brown",
    "how many shapes are there? blue green yellow white 0 1 2 3 4 5 6 7 8 9 question answer",
]


def _wordpiece_tokenizer(extra_specials=(), model_max_length=512):
    """A BERT-style WordPiece tokenizer (uncased) over a small vocabulary, as BertTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *extra_specials]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(specials + sorted(set(_WORDS)) + chars + pieces))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    kwargs = {}
    if "[DEC]" in extra_specials:
        kwargs["bos_token"] = "[DEC]"
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=model_max_length,
                             **kwargs)


def _bpe_backend(vocab_size=400):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_BPE_CORPUS * 4, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return bpe._tokenizer


def _bart_tokenizer():
    from transformers import BartTokenizerFast

    return BartTokenizerFast(tokenizer_object=_bpe_backend(), bos_token="<s>", eos_token="</s>",
                             pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                             extra_special_tokens={"image_token": "<image>"})


def _gpt2_tokenizer():
    """OPT's tokenizer: byte-level BPE that PREPENDS ``</s>`` as its BOS (``add_bos_token``)."""
    from transformers import GPT2Tokenizer

    tok = GPT2Tokenizer(tokenizer_object=_bpe_backend(), bos_token="</s>", eos_token="</s>",
                        pad_token="<pad>", unk_token="<unk>", add_bos_token=True)
    tok.padding_side = "left"
    return tok


def _labels(num_labels=16):
    """VQA-style answer strings as id2label (like the 3,129 answers of dandelin/vilt-b32-finetuned-vqa)."""
    names = ["yes", "no", "circle", "rectangle", "triangle", "red", "green", "blue", "yellow", "gray", "teal",
             "black", "brown", "white", "2", "1"][:num_labels]
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}


def _vilt(folder):
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tok = _wordpiece_tokenizer(model_max_length=40)
    id2label, label2id = _labels()
    config = ViltConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * HIDDEN, image_size=IMAGE_SIZE, patch_size=PATCH,
                        max_position_embeddings=40, max_image_length=-1, id2label=id2label, label2id=label2id)
    model = ViltForQuestionAnswering(config)
    image_processor = ViltImageProcessor(size={"shortest_edge": IMAGE_SIZE}, size_divisor=PATCH, resample=3,
                                         image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = ViltProcessor(image_processor=image_processor, tokenizer=tok)
    return model, processor


def _visualbert(folder):
    from transformers import VisualBertConfig, VisualBertForQuestionAnswering

    tok = _wordpiece_tokenizer()
    id2label, label2id = _labels()
    config = VisualBertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=2 * HIDDEN, visual_embedding_dim=24, max_position_embeddings=64,
                              id2label=id2label, label2id=label2id)
    return VisualBertForQuestionAnswering(config), tok


def _lxmert(folder):
    from transformers import LxmertConfig, LxmertForQuestionAnswering

    tok = _wordpiece_tokenizer()
    config = LxmertConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_attention_heads=2, intermediate_size=2 * HIDDEN,
                          l_layers=1, x_layers=1, r_layers=1, visual_feat_dim=24, visual_pos_dim=4,
                          num_qa_labels=4, num_object_labels=8, num_attr_labels=8, max_position_embeddings=64)
    return LxmertForQuestionAnswering(config), tok


def _blip(folder):
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tok = _wordpiece_tokenizer(extra_specials=("[DEC]", "[ENC]"))
    text = dict(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=2 * HIDDEN, encoder_hidden_size=HIDDEN, max_position_embeddings=64,
                bos_token_id=tok.convert_tokens_to_ids("[DEC]"), pad_token_id=tok.pad_token_id,
                sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id)
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=HIDDEN)
    config = BlipConfig(text_config=text, vision_config=vision, projection_dim=HIDDEN)
    model = BlipForQuestionAnswering(config)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
                                         image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tok)


def _blip2(folder):
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
        GenerationConfig,
        OPTConfig,
    )

    tok = _gpt2_tokenizer()
    newline = tok.convert_tokens_to_ids("\u010a")  # byte-level BPE's "\n" (id 50118 in OPT's vocabulary)
    num_query = 4
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
                                         image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)
    # as in the hub repo, <image> is an added token appended after the vocabulary (50265 there)
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=num_query)
    image_token_id = tok.convert_tokens_to_ids("<image>")
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    qformer = dict(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=2 * HIDDEN, encoder_hidden_size=HIDDEN, cross_attention_frequency=1,
                   max_position_embeddings=64)
    text = OPTConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, ffn_dim=2 * HIDDEN,
                     num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=HIDDEN,
                     bos_token_id=tok.bos_token_id, eos_token_id=newline, pad_token_id=tok.pad_token_id)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                         num_query_tokens=num_query, image_token_index=image_token_id)
    model = Blip2ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=newline,
                                               pad_token_id=tok.pad_token_id)
    return model, processor


def _florence2(folder):
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
        GenerationConfig,
    )

    tok = _bart_tokenizer()
    vision = Florence2VisionConfig(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                                   patch_prenorm=[False, True], embed_dim=[16, HIDDEN], num_heads=[1, 2],
                                   num_groups=[1, 2], window_size=4, drop_path_rate=0.0, projection_dim=HIDDEN,
                                   max_position_embeddings=16)
    text = BartConfig(vocab_size=len(tok), d_model=HIDDEN, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * HIDDEN,
                      decoder_ffn_dim=2 * HIDDEN, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=tok.bos_token_id,
                      forced_eos_token_id=tok.eos_token_id)
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    model = Florence2ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=tok.bos_token_id,
        forced_eos_token_id=tok.eos_token_id, no_repeat_ngram_size=3, num_beams=3, early_stopping=True)
    grid = IMAGE_SIZE // 8  # strides 4 x 2
    image_processor = CLIPImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3,
                                         image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    image_processor.image_seq_length = grid * grid + 1
    return model, Florence2Processor(image_processor=image_processor, tokenizer=tok)


def _spread_weights(model) -> None:
    """Re-draw every weight matrix with std 1/sqrt(fan-in) (biases and norms untouched).

    With the configs' usual std 0.02 a 32-wide random model gives the same answer to every input, so a
    test comparing two code paths could not tell them apart; with unit-variance activations the answer
    depends on the image and the question. Only the random values change, not the checkpoint's format.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "norm" not in name:
                p.normal_(0.0, 1.0 / max(1, p.shape[-1]) ** 0.5)


_BUILDERS = {"vilt": _vilt, "visualbert": _visualbert, "lxmert": _lxmert, "blip": _blip, "blip2": _blip2,
             "florence2": _florence2}


def make_tiny_checkpoint(family: str, folder: str, seed: int = 0) -> str:
    """Build a tiny random ``family`` model + processor/tokenizer and save_pretrained them into ``folder``.

    Returns ``folder``. Deterministic for a given ``seed``. Also writes ``piggyback_tiny.json``
    ({"family": ...}) so a reader can tell the folder is a test checkpoint.
    """
    if family not in _BUILDERS:
        raise ValueError(f"Unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    os.makedirs(folder, exist_ok=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model, processor = _BUILDERS[family](folder)
        _spread_weights(model)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    with open(os.path.join(folder, "piggyback_tiny.json"), "w", encoding="utf-8") as fh:
        json.dump({"family": family, "seed": seed}, fh)
    return folder


def make_tiny_backbone(folder: str, seed: int = 0) -> str:
    """A tiny RANDOM ResNet (transformers ``ResNetModel``) for the region-feature extractor, for tests only.

    Saved with ``save_pretrained`` plus ``piggyback_tiny.json``, so the extractor that loads it records
    "random tiny test backbone (not pretrained)" with its features; nothing picks it up unless a test
    passes ``feature_backbone=<folder>`` explicitly.
    """
    from transformers import ResNetConfig, ResNetModel

    os.makedirs(folder, exist_ok=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ResNetModel(ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1],
                                         layer_type="basic"))
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    with open(os.path.join(folder, "piggyback_tiny.json"), "w", encoding="utf-8") as fh:
        json.dump({"family": "feature-backbone", "seed": seed}, fh)
    return folder
