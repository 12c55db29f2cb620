"""Tiny random checkpoints of every transformers family, for tests and offline demos.

``make_tiny_checkpoint(family, folder)`` builds a randomly initialised model from a tiny config
(hidden 32, 1-2 layers), a matching processor/tokenizer made with the ``tokenizers`` library (no
download), and ``save_pretrained``-s both into ``folder``. The folder then loads like a hub checkpoint:
``get_adapter_class(key).create(spec, items, root, params, source=folder)``.

Families: vilt, visualbert, lxmert, blip, blip2, florence2. The vocabulary covers easy-VQA words and
falls back to single characters, so any English question tokenises.
"""
from __future__ import annotations

import json
import os
import string

import torch

FAMILIES = ("vilt", "visualbert", "lxmert", "blip", "blip2", "florence2")

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


def _wordpiece_tokenizer(extra_specials=()):
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
                             sep_token="[SEP]", mask_token="[MASK]", **kwargs)


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
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast(tokenizer_object=_bpe_backend(), bos_token="</s>", eos_token="</s>",
                            pad_token="<pad>", unk_token="<unk>",
                            extra_special_tokens={"image_token": "<image>"})
    tok.padding_side = "left"
    return tok


def _labels(num_labels=4):
    names = ["yes", "no", "circle", "red"][:num_labels]
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}


def _vilt(folder):
    from transformers import ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tok = _wordpiece_tokenizer()
    id2label, label2id = _labels()
    config = ViltConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * HIDDEN, image_size=IMAGE_SIZE, patch_size=PATCH,
                        max_position_embeddings=40, max_image_length=-1, id2label=id2label, label2id=label2id)
    model = ViltForQuestionAnswering(config)
    image_processor = ViltImageProcessor(size={"shortest_edge": IMAGE_SIZE}, size_divisor=PATCH)
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
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, BlipProcessor(image_processor=image_processor, tokenizer=tok)


def _blip2(folder):
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor, OPTConfig

    tok = _gpt2_tokenizer()
    num_query = 4
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    qformer = dict(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=2 * HIDDEN, encoder_hidden_size=HIDDEN, cross_attention_frequency=1,
                   max_position_embeddings=64)
    text = OPTConfig(vocab_size=len(tok), hidden_size=HIDDEN, num_hidden_layers=2, ffn_dim=2 * HIDDEN,
                     num_attention_heads=2, max_position_embeddings=128, word_embed_proj_dim=HIDDEN,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                         num_query_tokens=num_query, image_token_index=tok.image_token_id)
    model = Blip2ForConditionalGeneration(config)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return model, Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=num_query)


def _florence2(folder):
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
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
                      decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=tok.eos_token_id)
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    model = Florence2ForConditionalGeneration(config)
    grid = IMAGE_SIZE // 8  # strides 4 x 2
    image_processor = CLIPImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = grid * grid + 1
    return model, Florence2Processor(image_processor=image_processor, tokenizer=tok)


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
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    with open(os.path.join(folder, "piggyback_tiny.json"), "w", encoding="utf-8") as fh:
        json.dump({"family": family, "seed": seed}, fh)
    return folder
