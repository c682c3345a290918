"""CLIP Surgery's defining properties, checked on a random-weight CLIP against open_clip's own forward."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import build_tiny_clip

from fmtest.models.clip import ClipEncoder
from fmtest.models.clip_surgery import (
    ClipSurgery,
    SurgeryVisionEncoder,
    dual_attention,
    feature_surgery,
    prompt_templates,
    similarity_map,
)


@pytest.fixture(scope="module")
def encoder():
    return ClipEncoder(build_tiny_clip(layers=4, seed=5), model_id="tiny")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 72, 3), dtype=np.uint8) for _ in range(3)]


def _plain_tokens(model, batch):
    """open_clip's own per-patch output (ln_post, projection): what plain CLIP localises with."""
    visual = copy.copy(model.visual)
    visual.output_tokens = True
    with torch.no_grad():
        _, tokens = visual(batch)
        return tokens @ visual.proj


def test_class_token_is_plain_clip_image_embedding(encoder, images):
    surgery = ClipSurgery(encoder, depth=2)
    tokens = surgery.image_tokens(images)
    assert tokens.shape == (3, 1 + 4 * 4, 32)
    torch.testing.assert_close(tokens[:, 0], encoder.encode_images(images), atol=1e-5, rtol=1e-5)


def test_surgery_patch_tokens_differ_from_plain_clip(encoder, images):
    batch = encoder.preprocess(images)
    plain = F.normalize(_plain_tokens(encoder.model, batch), dim=-1)
    surgery = F.normalize(SurgeryVisionEncoder(encoder.model.visual, depth=2)(batch)[:, 1:], dim=-1)
    assert plain.shape == surgery.shape
    assert (plain - surgery).abs().max() > 1e-2


def test_qk_path_is_multihead_attention_and_vv_path_replaces_query_and_key_by_value(encoder):
    attn = encoder.model.visual.transformer.resblocks[-1].attn
    x = torch.randn(2, 17, attn.embed_dim)
    with torch.no_grad():
        qk, vv = dual_attention(attn, x)
        reference = attn(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(qk, reference, atol=1e-5, rtol=1e-5)
    assert (qk - vv).abs().max() > 1e-3

    value_only = copy.deepcopy(attn)
    d = attn.embed_dim
    with torch.no_grad():
        for tensor in (value_only.in_proj_weight, value_only.in_proj_bias):
            tensor[:d] = tensor[2 * d:]
            tensor[d:2 * d] = tensor[2 * d:]
        qk_v, vv_v = dual_attention(value_only, x)
    torch.testing.assert_close(qk_v, vv_v)
    torch.testing.assert_close(vv_v, vv)  # v-v attention uses only the value projection


def test_new_path_skips_the_ffn(encoder, images):
    batch = encoder.preprocess(images)
    model = copy.deepcopy(encoder.model)
    before = SurgeryVisionEncoder(model.visual, depth=2)(batch)
    with torch.no_grad():
        bias = model.visual.transformer.resblocks[-1].mlp.c_proj.bias
        bias += torch.randn_like(bias)  # not a constant: ln_post would cancel that
    after = SurgeryVisionEncoder(model.visual, depth=2)(batch)
    assert (before[:, 0] - after[:, 0]).abs().max() > 1e-3  # the original path runs the FFN
    torch.testing.assert_close(before[:, 1:], after[:, 1:])  # the surgery path does not


def test_depth_selects_how_many_blocks_get_the_dual_path(encoder, images):
    batch = encoder.preprocess(images)
    two = SurgeryVisionEncoder(encoder.model.visual, depth=2)(batch)
    four = SurgeryVisionEncoder(encoder.model.visual, depth=4)(batch)
    assert (two[:, 1:] - four[:, 1:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="depth must be 1..4"):
        SurgeryVisionEncoder(encoder.model.visual, depth=5)


def test_feature_surgery_removes_a_component_shared_by_all_classes():
    torch.manual_seed(0)
    d = 16
    tokens = F.normalize(torch.cat([torch.randn(1, 10, d // 2), torch.zeros(1, 10, d // 2)], -1), dim=-1)
    classes = torch.cat([torch.zeros(3, d // 2), torch.randn(3, d // 2)], -1)  # orthogonal to the tokens
    shared = torch.cat([torch.randn(d // 2), torch.zeros(d // 2)])  # seen by every token
    texts = classes + shared
    plain = tokens @ texts.T
    assert plain.abs().min() > 1e-3  # plain CLIP: every class "responds" through the shared part
    torch.testing.assert_close(feature_surgery(tokens, texts), torch.zeros(1, 10, 3), atol=1e-6, rtol=0)


def test_feature_surgery_matches_the_elementwise_definition():
    torch.manual_seed(1)
    tokens = F.normalize(torch.randn(2, 7, 12), dim=-1)  # token 0 is the class token
    texts = F.normalize(torch.randn(5, 12), dim=-1)
    weights = (tokens[:, :1] @ texts.T * 2).softmax(-1)  # image-level class weights
    weights = weights / weights.mean(-1, keepdim=True)
    products = tokens[:, :, None, :] * texts[None, None] * weights[:, :, :, None]  # (B, L, T, D)
    expected = (products - products.mean(dim=2, keepdim=True)).sum(-1)
    result = feature_surgery(tokens, texts)
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(result.sum(-1), torch.zeros(2, 7), atol=1e-6, rtol=0)
    # each image is weighted by its own class token
    torch.testing.assert_close(feature_surgery(tokens[1:], texts), result[1:])


def test_redundant_feature_form_subtracts_it_from_every_text():
    torch.manual_seed(2)
    tokens = F.normalize(torch.randn(1, 6, 8), dim=-1)
    texts = torch.randn(2, 8)
    redundant = torch.randn(8)
    torch.testing.assert_close(feature_surgery(tokens, texts, redundant), tokens @ (texts - redundant).T)
    shift = torch.randn(8)  # a component common to the prompt and the generic text is cancelled
    torch.testing.assert_close(feature_surgery(tokens, texts + shift, redundant + shift),
                               feature_surgery(tokens, texts, redundant), atol=1e-6, rtol=1e-5)


def test_similarity_map_shape_range_and_orientation():
    grid = torch.zeros(1, 2, 3, 4)
    grid[0, 0, 0, 3] = 5.0  # top-right patch
    grid[0, 1] = 7.0  # constant map: no NaN
    maps = similarity_map(grid, (30, 40))
    assert maps.shape == (1, 2, 30, 40)
    assert maps.min() >= 0 and maps.max() <= 1 and not maps.isnan().any()
    assert maps[0, 0, 0, -1] == maps[0, 0].max() and maps[0, 0, -1, 0] == 0
    torch.testing.assert_close(maps[0, 1], torch.zeros(30, 40))


def test_patch_similarity_shapes_and_text_cache(encoder, images):
    surgery = ClipSurgery(encoder, depth=2, templates=prompt_templates()[:3])
    sims = surgery.patch_similarity(images, ["defect", "scratch"], redundant_texts=[""])
    assert sims.shape == (3, 2, 4, 4)
    templates = prompt_templates()[:3]
    assert {("defect", templates), ("scratch", templates), ("", templates)} <= set(encoder._ensembles)
    class_set = surgery.patch_similarity(images[:1], ["defect", "scratch", "hole"])
    torch.testing.assert_close(class_set.sum(1), torch.zeros(1, 4, 4), atol=1e-6, rtol=0)


def test_prompt_templates_are_the_paper_set():
    templates = prompt_templates()
    assert len(templates) == 85 and len(set(templates)) == 85
    assert all(t.count("{}") == 1 for t in templates)
    assert "there is a {} in the scene." in templates and "a bad photo of a {}." in templates
