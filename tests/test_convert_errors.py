"""Bad input: one clear error line naming the file and the problem, exit status 1, no output file left."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import reference_models as rm
from convert.cli import main
from convert_expect import gguf_files

REPO = Path(__file__).resolve().parents[1]
# original layout, bf16, 3 shards, 1024-token vocabulary: small and quick to copy
DIMS = rm.OcrDims(vocab_size=1024, text_hidden=32, text_ffn=48, moe_ffn=16, n_experts=4)


@pytest.fixture(scope="module")
def base_model() -> Path:
    return rm.get_synthetic_ocr(DIMS, n_shards=3)


@pytest.fixture
def model(base_model, tmp_path) -> Path:
    return rm.copy_model(base_model, tmp_path / "model")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("convert-hf-to-gguf: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


def no_outputs(*dirs: Path) -> None:
    for d in dirs:
        if d.exists():
            assert gguf_files(d) == [], gguf_files(d)


def test_good_model_converts(model, tmp_path, capsys):
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "ok.gguf", "--outtype", "f16")
    assert rc == 0, err
    assert (tmp_path / "ok.gguf").exists()


def test_missing_config(model, tmp_path, capsys):
    (model / "config.json").unlink()
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, str(model / "config.json"), "not found")
    no_outputs(tmp_path, model)


def test_unreadable_config(model, tmp_path, capsys):
    (model / "config.json").write_text('{"architectures": ["DeepseekOCRForCausalLM"], ')
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, "config.json", "invalid JSON")
    no_outputs(tmp_path, model)


def test_config_missing_field(model, tmp_path, capsys):
    cfg = json.loads((model / "config.json").read_text())
    del cfg["language_config"]["hidden_size"], cfg["hidden_size"]
    (model / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, "config.json", "hidden_size")


def test_unknown_architecture(model, tmp_path, capsys):
    cfg = json.loads((model / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (model / "config.json").write_text(json.dumps(cfg))
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, "config.json", "unknown architecture", "LlamaForCausalLM")
    no_outputs(tmp_path, model)


def test_missing_shard(model, tmp_path, capsys):
    shard = sorted(model.glob("model-*.safetensors"))[1]
    shard.unlink()
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, shard.name, "missing")
    no_outputs(tmp_path, model)


def test_truncated_shard(model, tmp_path, capsys):
    shard = sorted(model.glob("model-*.safetensors"))[0]
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 1000)
    for extra in ([], ["--mmproj"]):
        rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf", *extra)
        assert rc == 1
        assert_one_error(err, shard.name, "truncated")
    no_outputs(tmp_path, model)


def test_truncated_header(model, tmp_path, capsys):
    shard = sorted(model.glob("model-*.safetensors"))[2]
    with open(shard, "r+b") as f:
        f.truncate(20)
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, shard.name, "truncated")


@pytest.mark.parametrize("mmproj,key,value,tensor", [
    (False, "intermediate_size", 64, "model.layers.0.mlp.gate_proj.weight"),
    (False, "moe_intermediate_size", 8, "model.layers.1.mlp.experts.0.gate_proj.weight"),
    (True, "sam_width", 48, "model.sam_model.patch_embed.proj.weight"),
])
def test_shape_contradicts_config(model, tmp_path, capsys, mmproj, key, value, tensor):
    cfg = json.loads((model / "config.json").read_text())
    if key == "sam_width":
        cfg["vision_config"]["width"]["sam_vit_b"]["width"] = value
    else:
        cfg["language_config"][key] = value
        cfg[key] = value
    (model / "config.json").write_text(json.dumps(cfg))
    idx = json.loads((model / "model.safetensors.index.json").read_text())
    shard = idx["weight_map"][tensor]
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf", *(["--mmproj"] if mmproj else []))
    assert rc == 1
    assert_one_error(err, shard, tensor, "config implies")
    no_outputs(tmp_path, model)


def test_unexpected_tensor(model, tmp_path, capsys):
    import numpy as np
    rm.write_safetensors(model / "extra.safetensors", {"model.layers.1.mlp.experts.4.up_proj.weight":
                                                       np.zeros((16, 32), np.float32)})
    idx = json.loads((model / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.layers.1.mlp.experts.4.up_proj.weight"] = "extra.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps(idx))
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, "extra.safetensors", "unexpected tensor", "experts.4")


def test_missing_tokenizer(model, tmp_path, capsys):
    (model / "tokenizer.json").unlink()
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "o.gguf")
    assert rc == 1
    assert_one_error(err, "tokenizer.json", "not found")
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "v.gguf", "--mmproj")  # not needed there
    assert rc == 0, err


def test_unwritable_output(model, tmp_path, capsys):
    rc, _, err = run_cli(capsys, model, "--outfile", tmp_path / "no" / "such" / "dir" / "o.gguf")
    assert rc == 1
    assert_one_error(err, "o.gguf", "does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = run_cli(capsys, model, "--outfile", blocker / "o.gguf")
    assert rc == 1
    assert_one_error(err, "o.gguf", "not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        rc, _, err = run_cli(capsys, model, "--outfile", ro / "o.gguf")
        assert rc == 1
        assert_one_error(err, "o.gguf", "not writable")
    no_outputs(tmp_path, model)


def test_existing_output_needs_force(model, tmp_path, capsys):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    rc, _, err = run_cli(capsys, model, "--outfile", out)
    assert rc == 1
    assert_one_error(err, "o.gguf", "exists", "--force")
    assert out.read_bytes() == b"keep me"
    rc, _, err = run_cli(capsys, model, "--outfile", out, "--force", "--outtype", "f16")
    assert rc == 0, err
    assert out.read_bytes()[:4] == b"GGUF"
    assert gguf_files(tmp_path) == ["o.gguf"]  # no temporary file left behind


def test_failure_midway_leaves_no_file(model, tmp_path, monkeypatch):
    """A failure while tensor data is being written removes the temporary file."""
    import convert.writer as writer
    from convert import ConversionError, convert

    calls = {"n": 0}
    real = writer.quantize_rows

    def failing(rows, qtype):
        calls["n"] += 1
        if calls["n"] == 5:
            raise ConversionError("disk", "simulated failure")
        return real(rows, qtype)

    monkeypatch.setattr(writer, "quantize_rows", failing)
    with pytest.raises(ConversionError, match="simulated"):
        convert(model, outfile=tmp_path / "o.gguf", outtype="f16")
    assert gguf_files(tmp_path) == []


def test_console_entry_point_exit_status(model, tmp_path):
    """`python -m convert` as a process: status 1 and one stderr line."""
    (model / "config.json").write_text("not json")
    p = subprocess.run([sys.executable, "-m", "convert", str(model), "--outfile", str(tmp_path / "o.gguf")],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 1
    assert_one_error(p.stderr, "config.json", "invalid JSON")
    assert p.stdout == ""
