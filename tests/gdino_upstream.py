"""The original GroundingDINO model class (IDEA-Research `groundingdino-py` 0.4.0) with random weights, as the
reference for the checkpoint converter: its state dict has the original keys and shapes, its forward pass the
original outputs.

`groundingdino-py` is installed without its dependencies (it pins supervision 0.6.0):
    pip install --no-deps groundingdino-py==0.4.0 addict yapf pycocotools platformdirs
Its C++ ops fall back to PyTorch on the CPU. Two things are substituted while the model is built, both
outside what the converter maps: BERT is built from a config instead of being downloaded, and
`BertModelWarper` (which calls `BertModel.get_extended_attention_mask`, gone in transformers 5) is replaced
by the BertModel itself given the same 4D self-attention mask.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from tiny_models import uncased_vocab_folder

groundingdino = pytest.importorskip("groundingdino", reason="reference package groundingdino-py is not installed")

from groundingdino.models.GroundingDINO import groundingdino as upstream_module
from groundingdino.models.GroundingDINO.backbone import build_backbone
from groundingdino.models.GroundingDINO.backbone.backbone import Joiner
from groundingdino.models.GroundingDINO.backbone.position_encoding import (
    build_position_encoding,
)
from groundingdino.models.GroundingDINO.backbone.swin_transformer import SwinTransformer
from groundingdino.models.GroundingDINO.transformer import build_transformer
from groundingdino.util import get_tokenlizer
from groundingdino.util.slconfig import SLConfig

CONFIGS = {"swint_ogc": "GroundingDINO_SwinT_OGC.py", "swinb_cogcoor": "GroundingDINO_SwinB_cfg.py"}
# scaled down with the same key structure: Swin-B keeps its deeper third stage and larger window.
# d_model stays 256: the original text position embedding is hard-coded to 256 features.
SMALL_SWIN = {"swint_ogc": {"embed_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 1, 2, 2], "window_size": 4},
              "swinb_cogcoor": {"embed_dim": 16, "depths": [1, 1, 3, 1], "num_heads": [1, 2, 2, 4], "window_size": 6}}
SMALL = {"dim_feedforward": 64, "enc_layers": 1, "dec_layers": 2, "num_queries": 20}


class _BertAsWarper(torch.nn.Module):
    """What BertModelWarper computes (BERT with a 3D self-attention mask), through transformers' BertModel."""

    def __init__(self, bert_model):
        super().__init__()
        self.config = bert_model.config
        self.embeddings, self.encoder, self.pooler = bert_model.embeddings, bert_model.encoder, bert_model.pooler
        self._bert_forward = bert_model.forward

    def forward(self, attention_mask=None, **inputs):
        if attention_mask is not None and attention_mask.ndim == 3:
            attention_mask = attention_mask[:, None]  # what get_extended_attention_mask did for 3D masks
        return self._bert_forward(attention_mask=attention_mask, **inputs)


def vocab_folder(tmp: Path) -> Path:
    """The bert-base-uncased vocabulary folder the upstream and the converted models tokenize with."""
    return uncased_vocab_folder(tmp)


def build_upstream(name: str, vocab: Path, small: bool, seed: int = 0):
    """The original GroundingDINO (official config `name`, or scaled down) with seeded random weights.

    Parameters the original initialises to zero (box-head output, deformable offsets and weights) get small
    random values, so every tensor the converter moves influences the outputs compared.
    """
    from transformers import BertConfig, BertModel

    args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / CONFIGS[name]))
    args.text_encoder_type = str(vocab)
    bert_config = BertConfig()  # bert-base-uncased
    if small:
        for key, value in SMALL.items():
            setattr(args, key, value)
        bert_config = BertConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    with torch.random.fork_rng(devices=[]), \
            mock.patch.object(get_tokenlizer, "get_pretrained_language_model", lambda _: BertModel(bert_config)), \
            mock.patch.object(upstream_module, "BertModelWarper", _BertAsWarper):
        torch.manual_seed(seed)
        if small:
            backbone = SwinTransformer(pretrain_img_size=224, out_indices=tuple(args.return_interm_indices),
                                       **SMALL_SWIN[name])
            joiner = Joiner(backbone, build_position_encoding(args))
            joiner.num_channels = backbone.num_features[4 - len(args.return_interm_indices):]
        else:
            joiner = build_backbone(args)  # the official Swin-T / Swin-B
        model = upstream_module.GroundingDINO(
            joiner, build_transformer(args), num_queries=args.num_queries, aux_loss=True, iter_update=True,
            query_dim=4, num_feature_levels=args.num_feature_levels, nheads=args.nheads,
            dec_pred_bbox_embed_share=args.dec_pred_bbox_embed_share, two_stage_type=args.two_stage_type,
            two_stage_bbox_embed_share=args.two_stage_bbox_embed_share,
            two_stage_class_embed_share=args.two_stage_class_embed_share, dn_number=0,
            text_encoder_type=args.text_encoder_type, sub_sentence_present=args.sub_sentence_present,
            max_text_len=args.max_text_len)
        with torch.no_grad():
            for parameter in model.parameters():
                if not parameter.any():
                    parameter.normal_(0.0, 0.02)
    return model.eval()
