"""The original GroundingDINO checkpoint layout (`groundingdino_swint_ogc.pth`, `groundingdino_swinb_cogcoor.pth`,
or a model fine-tuned with the IDEA-Research code base) turned into transformers' `GroundingDinoForObjectDetection`
at load time, so those files load directly and no conversion script or folder is needed.

Two steps, both checked:

1. The architecture is read from the tensor shapes (Swin width, depths, heads and window; BERT size; model
   width, layers, queries, feature levels): Swin-T, Swin-B and scaled variants all come out right. Only the
   attention head counts cannot be seen in a shape: both official configs set `nheads = 8`, and BERT keeps
   64-wide heads.
2. Every key is renamed by the table below; fused q/k/v projections are split in three. The result must cover
   every parameter of the target model with the same shape, and every source tensor must land somewhere
   (apart from derived buffers and BERT's pooler, which GroundingDINO never runs): a checkpoint of another
   model fails with one line naming the file instead of loading partially.

Target names are those of the installed transformers (5.x); tests check the table against both the upstream
model class and transformers' model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from fmtest.errors import DataError
from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

# Heads of the deformable/text attention in both official configs (GroundingDINO_SwinT_OGC.py, _SwinB_cfg.py).
ATTENTION_HEADS = 8
BERT_HEAD_DIM = 64  # bert-base-uncased: 768 wide, 12 heads
_SWIN = "model.backbone.conv_encoder.model."
_QKV = "{qkv}"  # placeholder: the source tensor is split along dim 0 into three targets

# Tensors the original layout carries that the transformers model derives itself or never uses.
_UNUSED = re.compile(r"(\.relative_position_index|^bert\.pooler\..*|^bert\.embeddings\.position_ids)$")

# (original key pattern, transformers key) in order; the first match renames. `{qkv}` marks a fused projection.
_RENAMES: tuple[tuple[str, str | Callable[[re.Match], str]], ...] = (
    # Swin backbone
    (r"backbone\.0\.patch_embed\.proj\.(.+)", _SWIN + r"swin.embeddings.patch_embeddings.projection.\1"),
    (r"backbone\.0\.patch_embed\.norm\.(.+)", _SWIN + r"swin.embeddings.norm.\1"),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.(.+)",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_before.\3"),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.(.+)",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_after.\3"),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table"),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(.+)",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.{qkv}.\3"),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(.+)",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.o_proj.\3"),
    (r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12])\.(.+)",
     _SWIN + r"swin.encoder.layers.\1.blocks.\2.mlp.\3.\4"),
    (r"backbone\.0\.layers\.(\d+)\.downsample\.(.+)", _SWIN + r"swin.encoder.layers.\1.downsample.\2"),
    # the original's norm{i} follows stage i counted from 0; transformers counts the patch stem as stage 0
    (r"backbone\.0\.norm(\d+)\.(.+)", lambda m: f"{_SWIN}hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}"),
    # text encoder and projections
    (r"bert\.(.+)", r"model.text_backbone.\1"),
    (r"feat_map\.(.+)", r"model.text_projection.\1"),
    (r"input_proj\.(.+)", r"model.input_proj_vision.\1"),
    (r"transformer\.level_embed", r"model.level_embed"),
    (r"transformer\.tgt_embed\.weight", r"model.query_position_embeddings.weight"),
    (r"transformer\.enc_output(_norm)?\.(.+)", r"model.enc_output\1.\2"),
    (r"transformer\.enc_out_bbox_embed\.(.+)", r"model.encoder_output_bbox_embed.\1"),
    # encoder: deformable image layers, text enhancer, fusion
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)", r"model.encoder.layers.\1.deformable_layer.self_attn.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.norm1\.(.+)",
     r"model.encoder.layers.\1.deformable_layer.self_attn_layer_norm.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.linear([12])\.(.+)", r"model.encoder.layers.\1.deformable_layer.fc\2.\3"),
    (r"transformer\.encoder\.layers\.(\d+)\.norm2\.(.+)", r"model.encoder.layers.\1.deformable_layer.final_layer_norm.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.{qkv}.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.self_attn\.out_proj\.(.+)",
     r"model.encoder.layers.\1.text_enhancer_layer.self_attn.out_proj.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.linear([12])\.(.+)", r"model.encoder.layers.\1.text_enhancer_layer.fc\2.\3"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.norm1\.(.+)",
     r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_before.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.norm2\.(.+)",
     r"model.encoder.layers.\1.text_enhancer_layer.layer_norm_after.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.gamma_v", r"model.encoder.layers.\1.fusion_layer.vision_param"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.gamma_l", r"model.encoder.layers.\1.fusion_layer.text_param"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_v\.(.+)",
     r"model.encoder.layers.\1.fusion_layer.layer_norm_vision.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_l\.(.+)",
     r"model.encoder.layers.\1.fusion_layer.layer_norm_text.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.(out_|values_)?v_proj\.(.+)",
     r"model.encoder.layers.\1.fusion_layer.attn.\2vision_proj.\3"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.(out_|values_)?l_proj\.(.+)",
     r"model.encoder.layers.\1.fusion_layer.attn.\2text_proj.\3"),
    # decoder
    (r"transformer\.decoder\.layers\.(\d+)\.cross_attn\.(.+)", r"model.decoder.layers.\1.encoder_attn.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm1\.(.+)", r"model.decoder.layers.\1.encoder_attn_layer_norm.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_text\.in_proj_(weight|bias)",
     r"model.decoder.layers.\1.encoder_attn_text.{qkv}.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_text\.out_proj\.(.+)", r"model.decoder.layers.\1.encoder_attn_text.out_proj.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.catext_norm\.(.+)",
     r"model.decoder.layers.\1.encoder_attn_text_layer_norm.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)", r"model.decoder.layers.\1.self_attn.{qkv}.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.(.+)", r"model.decoder.layers.\1.self_attn.out_proj.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm2\.(.+)", r"model.decoder.layers.\1.self_attn_layer_norm.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.linear([12])\.(.+)", r"model.decoder.layers.\1.fc\2.\3"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm3\.(.+)", r"model.decoder.layers.\1.final_layer_norm.\2"),
    (r"transformer\.decoder\.norm\.(.+)", r"model.decoder.layer_norm.\1"),
    (r"transformer\.decoder\.ref_point_head\.(.+)", r"model.decoder.reference_points_head.\1"),
    (r"transformer\.decoder\.bbox_embed\.(.+)", r"model.decoder.bbox_embed.\1"),
    (r"bbox_embed\.(.+)", r"bbox_embed.\1"),
)
_COMPILED = tuple((re.compile(pattern), target) for pattern, target in _RENAMES)
# fused projections: Swin attention splits into q/k/v_proj, torch MultiheadAttention into query/key/value
_SPLIT_NAMES = {True: ("q_proj", "k_proj", "v_proj"), False: ("query", "key", "value")}


def is_original_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict with the original code base's keys (a Swin backbone under `backbone.0.`)."""
    return any(key.startswith(("backbone.0.patch_embed.", "module.backbone.0.patch_embed.")) for key in state)


def _rename(key: str) -> str | None:
    for pattern, target in _COMPILED:
        match = pattern.fullmatch(key)
        if match:
            return target(match) if callable(target) else match.expand(target)
    return None


def convert_state_dict(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an original-layout checkpoint (keys without a `module.` prefix) under transformers'
    names, fused q/k/v projections split."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if _UNUSED.search(key):
            continue
        target = _rename(key)
        if target is None:
            unknown.append(key)
        elif _QKV in target:
            for name, part in zip(_SPLIT_NAMES["backbone." in key], tensor.chunk(3, dim=0), strict=True):
                converted[target.replace(_QKV, name)] = part
        else:
            converted[target] = tensor
    if unknown:
        raise DataError(f"{len(unknown)} tensors unknown to the GroundingDINO layout (e.g. {', '.join(unknown[:3])}); "
                        "not an IDEA-Research GroundingDINO checkpoint", path)
    return converted


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (with one group) over the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state if (m := regex.match(key))})


def _shape(state: Mapping[str, torch.Tensor], key: str, path: Path) -> torch.Size:
    try:
        return state[key].shape
    except KeyError:
        raise DataError(f"no tensor {key}: not an IDEA-Research GroundingDINO checkpoint", path) from None


def config_from_shapes(state: Mapping[str, torch.Tensor], path: Path):
    """The GroundingDinoConfig the checkpoint was trained with, read from its (prefix-free) tensor shapes."""
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    stages = _indices(state, r"backbone\.0\.layers\.(\d+)\.")
    if not stages:
        raise DataError("no Swin backbone stages (backbone.0.layers.*): not an IDEA-Research GroundingDINO checkpoint",
                        path)
    depths = [len(_indices(state, rf"backbone\.0\.layers\.{s}\.blocks\.(\d+)\.")) for s in stages]
    tables = [_shape(state, f"backbone.0.layers.{s}.blocks.0.attn.relative_position_bias_table", path) for s in stages]
    patch = _shape(state, "backbone.0.patch_embed.proj.weight", path)
    embed_dim = patch[0]
    swin = SwinConfig(
        embed_dim=embed_dim, depths=depths, num_heads=[t[1] for t in tables], patch_size=patch[-1],
        window_size=(math.isqrt(tables[0][0]) + 1) // 2,
        mlp_ratio=_shape(state, "backbone.0.layers.0.blocks.0.mlp.fc1.weight", path)[0] / embed_dim,
        out_indices=[i + 1 for i in _indices(state, r"backbone\.0\.norm(\d+)\.")],
    )
    words = _shape(state, "bert.embeddings.word_embeddings.weight", path)
    bert = BertConfig(
        vocab_size=words[0], hidden_size=words[1], num_attention_heads=max(words[1] // BERT_HEAD_DIM, 1),
        num_hidden_layers=len(_indices(state, r"bert\.encoder\.layer\.(\d+)\.")),
        intermediate_size=_shape(state, "bert.encoder.layer.0.intermediate.dense.weight", path)[0],
        max_position_embeddings=_shape(state, "bert.embeddings.position_embeddings.weight", path)[0],
        type_vocab_size=_shape(state, "bert.embeddings.token_type_embeddings.weight", path)[0],
    )
    levels = _shape(state, "transformer.level_embed", path)[0]

    def points(attention_weights: str) -> int:
        return _shape(state, attention_weights, path)[0] // (ATTENTION_HEADS * levels)

    return GroundingDinoConfig(
        backbone_config=swin, text_config=bert,
        d_model=_shape(state, "feat_map.weight", path)[0],
        num_queries=_shape(state, "transformer.tgt_embed.weight", path)[0],
        num_feature_levels=levels,
        encoder_layers=len(_indices(state, r"transformer\.encoder\.layers\.(\d+)\.")),
        decoder_layers=len(_indices(state, r"transformer\.decoder\.layers\.(\d+)\.")),
        encoder_ffn_dim=_shape(state, "transformer.encoder.layers.0.linear1.weight", path)[0],
        decoder_ffn_dim=_shape(state, "transformer.decoder.layers.0.linear1.weight", path)[0],
        encoder_attention_heads=ATTENTION_HEADS, decoder_attention_heads=ATTENTION_HEADS,
        encoder_n_points=points("transformer.encoder.layers.0.self_attn.attention_weights.weight"),
        decoder_n_points=points("transformer.decoder.layers.0.cross_attn.attention_weights.weight"),
    )


def _check_shared_box_heads(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Both official configs share one box head across decoder layers; transformers ties them the same way."""
    first = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith("bbox_embed.0.")}
    for layer in _indices(state, r"bbox_embed\.(\d+)\."):
        for name, tensor in first.items():
            if not torch.equal(state[f"bbox_embed.{layer}.{name}"], tensor):
                raise DataError("decoder layers have separate box heads (dec_pred_bbox_embed_share = False); "
                                "only the official shared-head configuration loads", path)


def load_converted(model, converted: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load converted tensors into `model` after checking they cover it exactly, shape for shape."""
    target = model.state_dict()
    # parameters the transformers backbone declares unused (its final Swin layernorm) need no source
    backbone = model.model.backbone.conv_encoder.model
    ignorable = [re.compile(_SWIN + p) for p in getattr(backbone, "_keys_to_ignore_on_load_missing", None) or ()]
    buffers = {name for name, _ in model.named_buffers()}
    missing = [k for k in target if k not in converted and k not in buffers
               and not any(p.match(k) for p in ignorable)]
    unexpected = [k for k in converted if k not in target]
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in converted.items()
             if k in target and v.shape != target[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} weights unknown to transformers (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} shapes differ (e.g. {', '.join(wrong[:2])})")
    if problems:
        raise DataError("GroundingDINO checkpoint does not convert to transformers' model: " + "; ".join(problems), path)
    model.load_state_dict(converted, strict=False)


def build_from_original(state: Mapping[str, torch.Tensor], path: Path):
    """transformers' GroundingDinoForObjectDetection with the original-layout checkpoint's weights, in eval mode."""
    from transformers import GroundingDinoForObjectDetection

    state = {key.removeprefix("module."): tensor for key, tensor in state.items()}
    config = config_from_shapes(state, path)
    _check_shared_box_heads(state, path)
    converted = convert_state_dict(state, path)
    model = GroundingDinoForObjectDetection(config)
    load_converted(model, converted, path)
    return model.eval()
