"""Shared pieces: views (spec §6), tokenizer, model config (transformers and original DeepSeek-OCR layout),
training samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

# ------------------------------------------------------------------------------------------------ tokens
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
SPECIALS = [BOS, EOS, PAD, "<image>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>",
            "<td>", "</td>", "<tr>", "</tr>", "<|User|>", "<|Assistant|>"]
PROMPT_FREE = "<image>\nFree OCR."
PROMPT_GROUNDING = "<image>\n<|grounding|>Convert the document to markdown."


def load_tokenizer(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(path) / "tokenizer.json") if Path(path).is_dir() else str(path))


# ------------------------------------------------------------------------------------------------ views
MODES = {"tiny": 512, "small": 640, "base": 1024, "large": 1280, "gundam": 1024}


def _find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for ratio in target_ratios:
        diff = abs(aspect_ratio - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best = ratio
    return best


def tile_grid(width: int, height: int, min_num=2, max_num=9, image_size=640) -> tuple[int, int]:
    """(cols, rows) of gundam tiling, as DeepSeek-OCR's dynamic_preprocess."""
    ratios = sorted(
        {(i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if min_num <= i * j <= max_num},
        key=lambda x: x[0] * x[1],
    )
    return _find_closest_aspect_ratio(width / height, ratios, width, height, image_size)


def _global_box(width: int, height: int, mode: str) -> tuple[int, int, int, int]:
    """Where the page lands in the global (or only) view, (x, y, w, h): stretched to the whole square for
    tiny/small, else fitted and centred as ImageOps.pad does (its rounding)."""
    s = MODES[mode]
    if mode in ("tiny", "small") or width == height:
        return 0, 0, s, s
    if width > height:
        h = round(height / width * s)
        return 0, round((s - h) * 0.5), s, h
    w = round(width / height * s)
    return round((s - w) * 0.5), 0, w, s


def _cut(img: Image.Image, mode: str, resample, pad_color):
    """Spec §6's geometry for any image (the page, or its glyph map): the global (or only) view, and in gundam
    mode with a page larger than a tile the page resized to the tile grid, with that grid (cols, rows)."""
    s = MODES[mode]
    x, y, w, h = _global_box(img.width, img.height, mode)
    g = img.resize((w, h), resample)
    if (w, h) != (s, s):
        canvas = Image.new(img.mode, (s, s), pad_color)
        canvas.paste(g, (x, y))
        g = canvas
    if mode == "gundam" and (img.width > 640 or img.height > 640):
        cols, rows = tile_grid(img.width, img.height)
        return g, img.resize((640 * cols, 640 * rows), resample), (cols, rows)
    return g, None, (0, 0)


def _tiles(a: np.ndarray, grid, k: int) -> np.ndarray:
    """[rows·k, cols·k, ...] -> [cols·rows, k, k, ...], tiles in raster order."""
    cols, rows = grid
    return np.stack([a[i * k:(i + 1) * k, j * k:(j + 1) * k] for i in range(rows) for j in range(cols)])


def make_views(img: Image.Image, mode: str):
    """Return (global uint8 [3,S,S], tiles uint8 [n,3,640,640] or None, (cols, rows))."""
    g, grid_img, grid = _cut(img.convert("RGB"), mode, Image.BICUBIC, (127, 127, 127))
    glob = np.array(g, dtype=np.uint8).transpose(2, 0, 1)  # a writable copy (torch.from_numpy warns on read-only)
    tiles = None
    if grid_img is not None:
        tiles = np.ascontiguousarray(_tiles(np.asarray(grid_img, dtype=np.uint8), grid, 640).transpose(0, 3, 1, 2))
    return glob, tiles, grid


GLYPH_PX = 8  # resolution of the glyph target: one label per 8x8 view pixels (8x8 labels per image token)


def glyph_views(glyphs: Image.Image, mode: str):
    """The glyph-class map (gen.Page.glyphs) cut into the same views as make_views, sampled at the centres of
    GLYPH_PX cells with nearest-neighbour resizing (classes are not blended). Returns (global uint8 [S/8, S/8],
    tiles uint8 [n, 80, 80] or None)."""
    c = GLYPH_PX // 2
    g, grid_img, grid = _cut(glyphs, mode, Image.NEAREST, 0)
    glob = np.asarray(g, dtype=np.uint8)[c::GLYPH_PX, c::GLYPH_PX].copy()
    tiles = None
    if grid_img is not None:
        tiles = _tiles(np.asarray(grid_img, dtype=np.uint8)[c::GLYPH_PX, c::GLYPH_PX], grid, 640 // GLYPH_PX)
    return glob, tiles


def n_image_tokens(global_size: int, grid=(0, 0)) -> int:
    q = global_size // 64
    n = q * (q + 1) + 1
    cols, rows = grid
    if cols * rows:
        n += (10 * rows) * (10 * cols + 1)
    return n


def image_cells(xy: np.ndarray, width: int, height: int, mode: str, grid=(0, 0)) -> np.ndarray:
    """For page-pixel points xy [n, 2] (NaN: none), the image tokens that cover them, as indices into the image
    block of the prompt (n_image_tokens' layout, UnlimitedOcr's order: woven tiles with a newline per row, then
    the global view with a newline per row, then the separator). Returns [n, 2] int64: (tile token, global
    token), -1 where a point has none (no tiles in this mode, or no point)."""
    s = MODES[mode]
    q = s // 64
    out = np.full((len(xy), 2), -1, dtype=np.int64)
    ok = ~np.isnan(xy[:, 0])
    x, y = xy[ok, 0], xy[ok, 1]
    cols, rows = grid
    n_local = 10 * rows * (10 * cols + 1) if cols * rows else 0
    if n_local:
        tx = np.clip((x * 640 * cols / width) // 64, 0, 10 * cols - 1)
        ty = np.clip((y * 640 * rows / height) // 64, 0, 10 * rows - 1)
        out[ok, 0] = (ty * (10 * cols + 1) + tx).astype(np.int64)
    bx, by, bw, bh = _global_box(width, height, mode)
    gx, gy = np.clip((bx + x * bw / width) // 64, 0, q - 1), np.clip((by + y * bh / height) // 64, 0, q - 1)
    out[ok, 1] = (n_local + gy * (q + 1) + gx).astype(np.int64)
    return out


def reading_cells(tok, target: str, xy: np.ndarray, width: int, height: int, mode: str, grid,
                  k: int = 8) -> np.ndarray:
    """For each token of build_ids' target (and its EOS), up to k image tokens (indices into the image block)
    that show its characters: the cells of its drawn non-space characters (of any drawn ones if it has only
    spaces), in the tiles and in the global view; -1 pads. [n_target_tokens + 1, k] int64."""
    enc = tok.encode(target, add_special_tokens=False)
    cells = image_cells(xy, width, height, mode, grid)
    out = np.full((len(enc.ids) + 1, k), -1, dtype=np.int64)
    for j, (a, b) in enumerate(enc.offsets):
        drawn = [i for i in range(a, b) if cells[i, 1] >= 0]
        ink = [i for i in drawn if not target[i].isspace()] or drawn
        got = sorted({int(c) for i in ink for c in cells[i] if c >= 0})[:k]
        out[j, :len(got)] = got
    return out


def normalize(x_uint8):
    """uint8 tensor -> float (x/255-0.5)/0.5."""
    return x_uint8.float().div_(127.5).sub_(1.0)


# ------------------------------------------------------------------------------------------------ samples
def build_ids(tok, n_img: int, prompt: str, target: str | None, ids: dict):
    """[BOS] + image tokens + prompt text after <image> (+ target + EOS). Returns (input_ids, labels)."""
    before, after = prompt.split("<image>")
    pre = [ids["bos"]] + (tok.encode(before, add_special_tokens=False).ids if before else [])
    pre += [ids["image"]] * n_img + tok.encode(after, add_special_tokens=False).ids
    if target is None:
        return pre, None
    tgt = tok.encode(target, add_special_tokens=False).ids + [ids["eos"]]
    return pre + tgt, [-100] * len(pre) + tgt


def special_ids(tok) -> dict:
    return {"bos": tok.token_to_id(BOS), "eos": tok.token_to_id(EOS), "pad": tok.token_to_id(PAD),
            "image": tok.token_to_id("<image>")}


def decode(tok, ids, eos_id) -> str:
    out = []
    for i in ids:
        if i == eos_id:
            break
        out.append(int(i))
    return tok.decode(out, skip_special_tokens=False)


# ------------------------------------------------------------------------------------------------ model config
DEFAULT_SIZE = dict(
    sam_width=96, sam_layers=4, sam_heads=4, sam_global=(1, 3), sam_mlp=384, sam_neck=96, sam_down=(160, 256),
    clip_layers=3, clip_heads=4, clip_mlp=768,
    text_hidden=256, text_layers=5, text_heads=4, text_dense_mlp=768, experts=4, expert_mlp=256, topk=2, shared=1,
)


def transformers_config(vocab_size: int, ids: dict, size: dict | None = None):
    from transformers import UnlimitedOcrConfig

    s = dict(DEFAULT_SIZE, **(size or {}))
    n = s["text_layers"]
    return UnlimitedOcrConfig(
        image_token_id=ids["image"],
        vision_config=dict(
            sam_config=dict(hidden_size=s["sam_width"], num_hidden_layers=s["sam_layers"],
                            num_attention_heads=s["sam_heads"], global_attn_indexes=list(s["sam_global"]),
                            output_channels=s["sam_neck"], downsample_channels=list(s["sam_down"]),
                            mlp_dim=s["sam_mlp"], image_size=1024, patch_size=16, window_size=14,
                            initializer_range=0.02),
            encoder_config=dict(hidden_size=s["sam_down"][-1], num_hidden_layers=s["clip_layers"],
                                num_attention_heads=s["clip_heads"], intermediate_size=s["clip_mlp"],
                                image_size=224, patch_size=14),
        ),
        text_config=dict(
            vocab_size=vocab_size, hidden_size=s["text_hidden"], num_hidden_layers=n,
            num_attention_heads=s["text_heads"], num_key_value_heads=s["text_heads"],
            intermediate_size=s["text_dense_mlp"], moe_intermediate_size=s["expert_mlp"],
            n_routed_experts=s["experts"], num_experts_per_tok=s["topk"], n_shared_experts=s["shared"],
            mlp_layer_types=["dense"] + ["sparse"] * (n - 1), layer_types=["full_attention"] * n,
            max_position_embeddings=8192, rms_norm_eps=1e-6, rope_parameters={"rope_theta": 10000.0,
                                                                              "rope_type": "default"},
            bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
        ),
        tie_word_embeddings=False,
    )


def original_layout_config(cfg) -> dict:
    """config.json in the original DeepSeek-OCR layout (fixtures/deepseek-ocr-v1/config.json), with the extra
    keys a small model needs (widths the original code hard-codes)."""
    t, sam, clip = cfg.text_config, cfg.vision_config.sam_config, cfg.vision_config.encoder_config
    lang = {
        "architectures": ["DeepseekV2ForCausalLM"],
        "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id, "pad_token_id": t.pad_token_id,
        "first_k_dense_replace": t.mlp_layer_types.index("sparse") if "sparse" in t.mlp_layer_types
        else t.num_hidden_layers,
        "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size, "kv_lora_rank": None,
        "lm_head": True, "max_position_embeddings": t.max_position_embeddings,
        "moe_intermediate_size": t.moe_intermediate_size, "n_group": 1, "n_routed_experts": t.n_routed_experts,
        "n_shared_experts": t.n_shared_experts, "num_attention_heads": t.num_attention_heads,
        "num_experts_per_tok": t.num_experts_per_tok, "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads, "q_lora_rank": None, "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0, "rm_head": False, "topk_group": 1, "topk_method": "greedy",
        "torch_dtype": "bfloat16", "use_mla": False, "v_head_dim": 0, "vocab_size": t.vocab_size,
        "rms_norm_eps": t.rms_norm_eps, "rope_theta": 10000.0, "routed_scaling_factor": 1.0,
    }
    out = {
        "_name_or_path": "tilepass/deepseek-ocr-v1-synthetic-tiny",
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "architectures": ["DeepseekOCRForCausalLM"],
        "language_config": lang,
        "model_type": "deepseek_vl_v2",
        "projector_config": {"input_dim": sam.downsample_channels[-1] + clip.hidden_size, "model_type": "mlp_projector",
                             "n_embed": t.hidden_size, "projector_type": "linear"},
        "tile_tag": "2D",
        "torch_dtype": "bfloat16",
        "vision_config": {
            "image_size": 1024,
            "mlp_ratio": clip.intermediate_size / clip.hidden_size,
            "model_name": "deeplip_b_l",
            "model_type": "vision",
            "width": {
                "clip-l-14-224": {"heads": clip.num_attention_heads, "image_size": 224,
                                  "layers": clip.num_hidden_layers, "patch_size": 14, "width": clip.hidden_size,
                                  "intermediate_size": clip.intermediate_size},
                "sam_vit_b": {"downsample_channels": list(sam.downsample_channels),
                              "global_attn_indexes": list(sam.global_attn_indexes), "heads": sam.num_attention_heads,
                              "layers": sam.num_hidden_layers, "width": sam.hidden_size, "mlp_dim": sam.mlp_dim,
                              "neck_channels": sam.output_channels, "patch_size": 16, "window_size": 14},
            },
        },
        "image_token_id": cfg.image_token_id,
    }
    out.update({k: v for k, v in lang.items() if k != "architectures"})
    return out


def config_from_original(d: dict):
    """Inverse of original_layout_config (for loading the bundled checkpoint into transformers)."""
    lang = d["language_config"]
    sam = d["vision_config"]["width"]["sam_vit_b"]
    clip = d["vision_config"]["width"]["clip-l-14-224"]
    n = lang["num_hidden_layers"]
    k = lang.get("first_k_dense_replace", 1)
    size = dict(
        sam_width=sam["width"], sam_layers=sam["layers"], sam_heads=sam["heads"],
        sam_global=tuple(sam["global_attn_indexes"]), sam_mlp=sam.get("mlp_dim", sam["width"] * 4),
        sam_neck=sam.get("neck_channels", 256), sam_down=tuple(sam["downsample_channels"]),
        clip_layers=clip["layers"], clip_heads=clip["heads"],
        clip_mlp=clip.get("intermediate_size", int(round(d["vision_config"]["mlp_ratio"] * clip["width"]))),
        text_hidden=lang["hidden_size"], text_layers=n, text_heads=lang["num_attention_heads"],
        text_dense_mlp=lang["intermediate_size"], experts=lang["n_routed_experts"],
        expert_mlp=lang["moe_intermediate_size"], topk=lang["num_experts_per_tok"], shared=lang["n_shared_experts"],
    )
    ids = {"image": d.get("image_token_id", 128815), "bos": lang["bos_token_id"], "eos": lang["eos_token_id"],
           "pad": lang.get("pad_token_id", 2)}
    cfg = transformers_config(lang["vocab_size"], ids, size)
    cfg.text_config.mlp_layer_types = ["dense"] * k + ["sparse"] * (n - k)
    return cfg


def load_model(model_dir, dtype=None, device="cpu"):
    import torch
    from transformers import UnlimitedOcrForConditionalGeneration

    d = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = config_from_original(d) if "language_config" in d else None
    m = UnlimitedOcrForConditionalGeneration.from_pretrained(str(model_dir), config=cfg,
                                                             dtype=dtype or torch.float32)
    return m.to(device).eval()


def save_bundle(model, tok_dir, out_dir, max_shard="15MB", copy_tokenizer=True):
    """Save bf16 safetensors (original tensor names), original-layout config.json, tokenizer files."""
    import shutil

    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in out_dir.glob("model*.safetensors*"):
        f.unlink()
    dtype = next(model.parameters()).dtype
    model.to(torch.bfloat16)
    model.save_pretrained(str(out_dir), max_shard_size=max_shard)
    model.to(dtype)
    (out_dir / "transformers_config.json").write_text((out_dir / "config.json").read_text())
    (out_dir / "config.json").write_text(json.dumps(original_layout_config(model.config), indent=1) + "\n")
    (out_dir / "generation_config.json").unlink(missing_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json") if copy_tokenizer else ():
        if (Path(tok_dir) / name).exists():
            shutil.copy(Path(tok_dir) / name, out_dir / name)
