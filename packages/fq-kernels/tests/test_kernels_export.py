"""`fq export --format compressed-tensors`: the layout, a lossless round trip, atomic writes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fq_core.checkpoint import load_checkpoint, save_checkpoint
from fq_core.checkpoint.testing import A4, KV4, random_tensors, tiny_config, tiny_model
from fq_core.cli import main
from fq_core.errors import ConfigError
from fq_core.quant import QuantSpec, unpack_int4
from fq_kernels.export import compressed_tensors as ct
from fq_kernels.export import export_compressed_tensors, load_compressed_tensors, pack_int32, unpack_int32

CASES = {
    "w4-channel-kv4-bias-untied": tiny_config(model=tiny_model(qkv_bias=True, tie_word_embeddings=False)),
    "w4-group8-kv16": tiny_config(
        weight=QuantSpec(4, True, "group", 8), act=A4, key=QuantSpec(16), value=QuantSpec(16), k_cache=False
    ),
    "rtn-w4a4": tiny_config(method="rtn"),
}


@pytest.fixture(params=sorted(CASES))
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    config = CASES[request.param]
    save_checkpoint(tmp_path / "ckpt", config, random_tensors(config, seed=5))
    return tmp_path / "ckpt"


def test_pack_int32_puts_eight_offset_nibbles_in_a_word_low_first() -> None:
    # q + 8 = 9, 6, 15, 0, 8, 8, 8, 8 from bit 0 up: 0x88880F69 (as a signed int32)
    assert pack_int32(torch.tensor([[1, -2, 7, -8, 0, 0, 0, 0]])).item() == 0x88880F69 - 2**32
    q = torch.randint(-8, 8, (5, 13))  # 13 is padded to 16
    assert pack_int32(q).shape == (5, 2)
    assert torch.equal(unpack_int32(pack_int32(q), 13), q.to(torch.int8))


def test_weights_and_scales_are_the_checkpoints_in_compressed_tensors_names(
    checkpoint: Path, tmp_path: Path
) -> None:
    out = export_compressed_tensors(checkpoint, tmp_path / "ct")
    original = load_checkpoint(checkpoint)
    stored = load_file(out / "model.safetensors")
    for i in range(original.config.model.num_layers):
        for linear in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
            name = f"layers.{i}.{linear}"
            q = unpack_int4(original.tensors[f"{name}.qweight"], signed=True)
            assert stored[f"model.{name}.weight_packed"].dtype == torch.int32
            assert torch.equal(stored[f"model.{name}.weight_shape"], torch.tensor(list(q.shape)))
            assert torch.equal(unpack_int32(stored[f"model.{name}.weight_packed"], q.shape[1]), q)
            assert torch.equal(stored[f"model.{name}.weight_scale"], original.tensors[f"{name}.scale"])
    assert torch.equal(stored["model.embed_tokens.weight"], original.tensors["embed_tokens.weight"])
    assert ("lm_head.weight" in stored) == (not original.config.model.tie_word_embeddings)


def test_round_trip_gives_back_every_tensor_and_the_config(checkpoint: Path, tmp_path: Path) -> None:
    original = load_checkpoint(checkpoint)
    back = load_compressed_tensors(export_compressed_tensors(checkpoint, tmp_path / "ct"))
    assert back.config.to_dict() | {"files": []} == original.config.to_dict() | {"files": []}
    assert list(back.tensors) == list(original.tensors)
    for name, tensor in original.tensors.items():
        assert back.tensors[name].dtype == tensor.dtype and torch.equal(back.tensors[name], tensor), name
    save_checkpoint(tmp_path / "again", back.config, back.tensors)  # a valid flatquant checkpoint again


def test_config_json_is_the_hf_config_with_a_compressed_tensors_quantization_config(tmp_path: Path) -> None:
    config = tiny_config()
    save_checkpoint(tmp_path / "ckpt", config, random_tensors(config))
    out = export_compressed_tensors(tmp_path / "ckpt", tmp_path / "ct")
    hf = json.loads((out / "config.json").read_text())
    assert {k: hf[k] for k in config.model.hf_config} == config.model.hf_config
    q = hf["quantization_config"]
    assert (q["quant_method"], q["format"], q["quantization_status"]) == (
        "compressed-tensors",
        "pack-quantized",
        "compressed",
    )
    scheme = q["config_groups"]["group_0"]
    assert scheme["targets"] == ["Linear"] and q["ignore"] == ["lm_head"]
    assert scheme["weights"] == {
        "num_bits": 4,
        "type": "int",
        "symmetric": True,
        "strategy": "channel",
        "group_size": None,
        "dynamic": False,
    }
    assert scheme["input_activations"]["strategy"] == "token" and scheme["input_activations"]["dynamic"]
    assert q["kv_cache_scheme"]["num_bits"] == KV4.bits and q["kv_cache_scheme"]["group_size"] == 8
    extra = load_file(out / ct.TRANSFORMS_FILE)
    assert "layers.0.attn_in.left" in extra and "layers.1.k_cache.clip_max" in extra
    assert not any(name.endswith((".qweight", ".scale", ".weight")) for name in extra)


def test_a_failed_export_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    save_checkpoint(tmp_path / "ckpt", config, random_tensors(config))
    calls = []

    def fail_on_second_file(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        ct.save_file(*args, **kwargs)

    monkeypatch.setattr(ct, "save_file", fail_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        export_compressed_tensors(tmp_path / "ckpt", tmp_path / "out" / "ct")
    assert list((tmp_path / "out").iterdir()) == []


def test_export_refuses_an_existing_output_and_weights_it_cannot_pack(tmp_path: Path) -> None:
    config = tiny_config()
    save_checkpoint(tmp_path / "ckpt", config, random_tensors(config))
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export_compressed_tensors(tmp_path / "ckpt", tmp_path / "taken")
    w8 = tiny_config(weight=QuantSpec(8, True, "channel"))
    save_checkpoint(tmp_path / "w8", w8, random_tensors(w8))
    with pytest.raises(ConfigError, match="4-bit symmetric"):
        export_compressed_tensors(tmp_path / "w8", tmp_path / "w8-ct")
    assert not (tmp_path / "w8-ct").exists()


def test_fq_export_writes_the_directory_and_reports_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config()
    save_checkpoint(tmp_path / "ckpt", config, random_tensors(config))
    args = ["export", "--checkpoint", str(tmp_path / "ckpt"), "-o", str(tmp_path / "ct")]
    assert main([*args, "--format", "compressed-tensors"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_compressed_tensors(tmp_path / "ct").config.to_dict()["quant"] == config.to_dict()["quant"]
    for bad, words in (
        (args, "already exists"),
        ([*args[:-1], str(tmp_path / "x"), "--format", "gguf"], "--format"),
        (["export", "--checkpoint", str(tmp_path / "nope"), "-o", str(tmp_path / "y")], "nope"),
    ):
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
