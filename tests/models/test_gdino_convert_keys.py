"""The official GroundingDINO layouts (Swin-T OGC, Swin-B COGCOOR) convert onto every parameter of
transformers' model, shape for shape, without the upstream package.

tests/files/gdino_original_keys.json lists each official checkpoint's tensor names and shapes, taken
once from the upstream `groundingdino` model class at full size (tests/gdino_upstream.py builds that
class; test_gdino_convert.py compares outputs with it where the package is installed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from fakes import FILES

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fmtest.errors import DataError
from fmtest.models import gdino_convert

LAYOUTS = json.loads((FILES / "gdino_original_keys.json").read_text())
SWIN = {"swint_ogc": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7), "swinb_cogcoor": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12)}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_the_official_layout_converts_onto_every_parameter(name):
    from transformers import GroundingDinoForObjectDetection

    path = Path(f"groundingdino_{name}.pth")
    state = {key: torch.empty(shape, device="meta") for key, shape in LAYOUTS[name].items()}
    config = gdino_convert.config_from_shapes(state, path)
    swin = config.backbone_config
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads), swin.window_size) == SWIN[name]
    assert (config.d_model, config.num_queries, config.encoder_layers, config.decoder_layers) == (256, 900, 6, 6)
    with torch.device("meta"):
        target = GroundingDinoForObjectDetection(config)
    buffers = {key for key, _ in target.named_buffers()}
    needed = {k: tuple(v.shape) for k, v in target.state_dict().items()
              if k not in buffers and ".swin.layernorm." not in k}
    converted = {k: tuple(v.shape) for k, v in gdino_convert.convert_state_dict(state, path).items()}
    assert converted.keys() <= set(target.state_dict())  # nothing lands outside the model
    assert {k: converted.get(k) for k in needed} == needed  # every parameter, same shape


def test_a_tensor_outside_the_layout_is_refused_naming_the_file():
    state = {key: torch.empty(shape, device="meta") for key, shape in LAYOUTS["swint_ogc"].items()}
    state["head.extra.weight"] = torch.empty(3, device="meta")
    with pytest.raises(DataError, match=r"mine\.pth: 1 tensors unknown to the GroundingDINO layout"):
        gdino_convert.convert_state_dict(state, Path("mine.pth"))
