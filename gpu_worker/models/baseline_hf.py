"""The baseline as a transformers model, for people who load an exported PiggyBack baseline elsewhere.

``PiggyBaselineForVQA.from_pretrained(folder)`` (or ``AutoModel.from_pretrained(folder)`` once this module
is imported: it registers ``model_type = "piggyback-baseline"`` with ``AutoConfig``/``AutoModel``) loads a
folder the workers saved. It has the same layers and forward pass as the workers' plain
:class:`~gpu_worker.models.baseline_net.BaselineNet` (both use ``BaselineLayers``); the workers do not
import this module, to keep transformers out of their memory (see ``baseline_net``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from gpu_worker.models.baseline_net import FIELDS, MODEL_TYPE, BaselineConfig, BaselineLayers


class PiggyBaselineConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, **kwargs):
        # the model's own fields, their defaults and checks are BaselineConfig's (one definition)
        own = BaselineConfig(**{k: kwargs.pop(k) for k in FIELDS if k in kwargs})
        for name in FIELDS:
            setattr(self, name, getattr(own, name))
        super().__init__(**kwargs)


@dataclass
class PiggyVQAOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    attentions: Optional[torch.Tensor] = None   # (questions, glimpses, grid*grid)


class PiggyBaselineForVQA(BaselineLayers, PreTrainedModel):
    config_class = PiggyBaselineConfig
    base_model_prefix = "piggy"
    main_input_name = "pixel_values"

    def __init__(self, config: PiggyBaselineConfig):
        PreTrainedModel.__init__(self, config)
        self._build_layers(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        self._reset(module)

    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, image_index=None,
                question_embeds=None, question_index=None, labels=None, image_features=None,
                output_attentions=None, return_dict=None, **kwargs):
        loss, logits, att = self._vqa_forward(pixel_values, input_ids, attention_mask, image_index, question_embeds,
                                              question_index, labels, image_features, output_attentions)
        return PiggyVQAOutput(loss=loss, logits=logits, attentions=att)


AutoConfig.register(PiggyBaselineConfig.model_type, PiggyBaselineConfig, exist_ok=True)
AutoModel.register(PiggyBaselineConfig, PiggyBaselineForVQA, exist_ok=True)
