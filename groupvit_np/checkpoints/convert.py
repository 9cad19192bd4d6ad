"""Original NVlabs checkpoints -> HF names, config inferred from shapes, and converted folders written atomically.

`load_nvlabs(path)` reads `ckpt["model"]` of a release `.pth` without torch, renames it the way transformers'
`convert_groupvit_nvlab_to_hf.py` does (spec: original-groupvit.md section 2.3) and infers the config.
`write_checkpoint` / `convert` write `config.json` + `model.safetensors` that transformers and we both load.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GroupViTConfig, GroupViTTextConfig, GroupViTVisionConfig, as_if_created, write_json_atomic
from .safetensors_io import write_safetensors
from .weights import CheckpointError, expected_shapes, validate

# Files a Hub snapshot carries beside the weights; copied into a converted folder when the source has them.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "preprocessor_config.json")  # fmt: skip
DTYPES = ("float32", "float16", "bfloat16")


class ChecksumWarning(UserWarning):
    """A release file whose SHA-256 does not start with the hash prefix in its name."""


# ---------------------------------------------------------------------------------------------------------------
# Renaming. Substring rules applied in order, each with the guard transformers' script uses.

_RULES: tuple[tuple[str, str, Any], ...] = (
    ("img_encoder.pos_embed", "vision_model.embeddings.position_embeddings", None),
    ("img_encoder.patch_embed.proj", "vision_model.embeddings.patch_embeddings.projection", None),
    ("img_encoder.patch_embed.norm", "vision_model.embeddings.layernorm", None),
    ("img_encoder.layers", "vision_model.encoder.stages", None),
    ("blocks", "layers", lambda k: "res" not in k),  # keeps the text `resblocks` intact
    ("attn", "self_attn", lambda k: "pre_assign" not in k),  # text `attn.out_proj` becomes `self_attn.out_proj` too
    ("proj", "out_proj", lambda k: "self_attn" in k and "text" not in k),  # vision block output projection
    ("pre_assign_attn.attn.proj", "pre_assign_attn.attn.out_proj", None),
    ("norm1", "layer_norm1", None),
    ("norm2", "layer_norm2", lambda k: "pre_assign" not in k),
    ("img_encoder.norm", "vision_model.layernorm", None),
    ("text_encoder.token_embedding", "text_model.embeddings.token_embedding", None),
    ("text_encoder.positional_embedding", "text_model.embeddings.position_embedding.weight", None),
    ("text_encoder.transformer.resblocks.", "text_model.encoder.layers.", None),
    ("ln_1", "layer_norm1", None),
    ("ln_2", "layer_norm2", None),
    ("c_fc", "fc1", None),
    ("c_proj", "fc2", None),
    ("text_encoder", "text_model", None),
    ("ln_final", "final_layer_norm", None),
    ("img_projector.linear_hidden.", "visual_projection.", None),
    ("img_projector.linear_out.", "visual_projection.3.", None),
    ("text_projector.linear_hidden.", "text_projection.", None),
    ("text_projector.linear_out.", "text_projection.3.", None),
)
_FAMILIES = ("img_encoder.", "text_encoder.", "img_projector.", "text_projector.")
# Fused attention inputs: rows [0:d] are q, [d:2d] k, [2d:3d] v.
_FUSED = (
    (re.compile(r"^img_encoder\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"),
     "vision_model.encoder.stages.{0}.layers.{1}.self_attn.{q}_proj.{2}"),
    (re.compile(r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$"),
     "text_model.encoder.layers.{0}.self_attn.{q}_proj.{1}"),
)  # fmt: skip


def rename_key(key: str) -> str:
    """One NVlabs key -> its HF name. E.g. 'img_encoder.layers.0.blocks.1.norm1.weight' ->
    'vision_model.encoder.stages.0.layers.1.layer_norm1.weight'."""
    for old, new, guard in _RULES:
        if old in key and (guard is None or guard(key)):
            key = key.replace(old, new)
    return key


def nvlabs_to_hf(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NVlabs state dict -> HF state dict: renamed, fused q/k/v split, Conv1d [O, I, 1] squeezed to [O, I]."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if key == "multi_label_logit_scale":
            continue  # the yfcc model's multi-label loss temperature: training only
        if key != "logit_scale" and not key.startswith(_FAMILIES):
            hint = (
                " (this looks like an HF checkpoint already)" if key.startswith(("vision_model", "text_model")) else ""
            )
            raise CheckpointError(f"unknown key {key!r} in an NVlabs checkpoint{hint}")
        for pattern, template in _FUSED:
            if m := pattern.match(key):
                if value.shape[0] % 3:
                    raise CheckpointError(
                        f"{key} has shape {value.shape}: the fused q/k/v rows are not a multiple of 3"
                    )
                for part, rows in zip("qkv", np.split(value, 3, axis=0), strict=True):  # [3D, ...] -> 3 x [D, ...]
                    out[template.format(*m.groups(), q=part)] = rows
                break
        else:
            new = rename_key(key)
            if re.match(r"^(visual|text)_projection\.[03]\.weight$", new) and value.ndim == 3:
                value = value[:, :, 0]  # Conv1d(kernel 1) [O, I, 1] -> Linear [O, I]
            out[new] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# Config from shapes (openai/CLIP's build_model does the same for CLIP).


def _count(state: dict[str, Any], pattern: str) -> int:
    """1 + the largest index matched by the group in `pattern` (0 when nothing matches)."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def _ratio(n: int, d: int) -> float | int:
    r = n / d
    return int(r) if r == int(r) else r


def infer_config(state: dict[str, np.ndarray], *, vision_heads: int = 6, text_heads: int = 4) -> GroupViTConfig:
    """A GroupViTConfig from the tensor shapes of an HF-named state dict.

    Shapes give widths, depths, group counts, patch and image size, vocabulary and context. Head counts leave no
    trace in shapes: they default to the released models' 6 (vision) and 4 (text). Text ids follow CLIP's
    tokenizer, whose last two ids are BOS and EOS (49406 / 49407 for the 49408-token vocabulary); pooling at the
    first EOS is then the original's argmax pooling.
    """
    try:
        pos = state["vision_model.embeddings.position_embeddings"].shape  # [1, N, D]
        patch = state["vision_model.embeddings.patch_embeddings.projection.weight"].shape  # [D, C, p, p]
        d = pos[2]
        grid = round(pos[1] ** 0.5)
        if grid * grid != pos[1] or patch[2] != patch[3]:
            raise CheckpointError(f"position table {pos} or patch kernel {patch} is not square")
        stages = _count(state, r"^vision_model\.encoder\.stages\.(\d+)\.")
        depths = [_count(state, rf"^vision_model\.encoder\.stages\.{s}\.layers\.(\d+)\.") for s in range(stages)]
        groups, outputs = [], []
        for s in range(stages):
            token = state.get(f"vision_model.encoder.stages.{s}.group_token")  # [1, G, D]
            groups.append(token.shape[1] if token is not None else 0)
            fc2 = state.get(f"vision_model.encoder.stages.{s}.downsample.mlp_inter.fc2.weight")  # [S, D/2]
            outputs.append(fc2.shape[0] if fc2 is not None else (outputs[-1] if outputs else 0))
        ds = "vision_model.encoder.stages.0.downsample"
        vision = GroupViTVisionConfig(
            hidden_size=d,
            intermediate_size=state["vision_model.encoder.stages.0.layers.0.mlp.fc1.weight"].shape[0],
            depths=depths,
            num_hidden_layers=sum(depths),
            num_group_tokens=groups,
            num_output_groups=outputs,
            num_attention_heads=vision_heads,
            image_size=grid * patch[2],
            patch_size=patch[2],
            num_channels=patch[1],
            assign_mlp_ratio=[_ratio(state[f"{ds}.mlp_inter.fc1.weight"].shape[0], d),
                              _ratio(state[f"{ds}.mlp_channels.fc1.weight"].shape[0], d)],
        )  # fmt: skip
        vocab, width = state["text_model.embeddings.token_embedding.weight"].shape  # [V, D]
        text = GroupViTTextConfig(
            vocab_size=vocab,
            hidden_size=width,
            intermediate_size=state["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=_count(state, r"^text_model\.encoder\.layers\.(\d+)\."),
            num_attention_heads=text_heads,
            max_position_embeddings=state["text_model.embeddings.position_embedding.weight"].shape[0],
            bos_token_id=vocab - 2,
            eos_token_id=vocab - 1,
        )
        out = state["visual_projection.3.weight"].shape  # [P, I]
        return GroupViTConfig(text, vision, projection_dim=out[0], projection_intermediate_dim=out[1])
    except KeyError as err:
        raise CheckpointError(f"cannot infer the config: the state dict has no {err.args[0]!r}") from None
    except ValueError as err:  # e.g. a width not divisible by the default head count
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"cannot infer the config: {err}") from None


# ---------------------------------------------------------------------------------------------------------------
# Reading a release file.

_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")  # torch.hub's convention: name-<sha256 prefix>.pth


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_hash_prefix(path: str | os.PathLike) -> bool | None:
    """Compare the hash prefix in the file name with the file's SHA-256: True/False, None when the name has none.

    A mismatch is reported with `warnings.warn(ChecksumWarning)`: the file may be truncated or not the release.
    """
    path = Path(path)
    m = _HASH_SUFFIX.search(path.name)
    if m is None:
        return None
    digest = sha256_file(path)
    if digest.startswith(m.group(1)):
        return True
    warnings.warn(
        f"{path.name}: its SHA-256 starts with {digest[: len(m.group(1))]}, but the name says {m.group(1)}; the "
        "file may be truncated, corrupt, or not the official release",
        ChecksumWarning,
        stacklevel=2,
    )
    return False


def load_nvlabs(
    path: str | os.PathLike, *, vision_heads: int = 6, text_heads: int = 4, verify_hash: bool = True
) -> tuple[GroupViTConfig, dict[str, np.ndarray]]:
    """An NVlabs release `.pth` -> (inferred config, HF-named state dict), validated key by key.

    Only `ckpt["model"]` is read. The rest of the wrapper (optimizer, scheduler, the training config as a
    pickled OmegaConf object) is parsed into inert placeholders and never executed nor kept.
    """
    from .torch_pickle import load_torch_file

    path = Path(path)
    if verify_hash:
        check_hash_prefix(path)
    state = load_torch_file(path, select="model", opaque=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: ckpt['model'] is a {type(state).__name__}, not a state dict")
    for key, value in state.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: ckpt['model'][{key!r}] is a {type(value).__name__}, not a tensor")
    hf = nvlabs_to_hf(state)
    config = infer_config(hf, vision_heads=vision_heads, text_heads=text_heads)
    validate(hf, expected_shapes(config), str(path))
    return config, hf


def _hf_state(config: GroupViTConfig, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors transformers' GroupViTModel has: the config's keys plus the BatchNorm step counters."""
    expected = expected_shapes(config)
    validate(state, expected, "the state dict to write")
    out = {k: state[k] for k in expected}
    for head in ("visual_projection", "text_projection"):  # eval mode never reads it; written so HF finds every key
        key = f"{head}.1.num_batches_tracked"
        out[key] = np.asarray(state.get(key, 0), dtype=np.int64).reshape(())
    return out


def write_checkpoint(
    config: GroupViTConfig,
    state: dict[str, np.ndarray],
    dst: str | os.PathLike,
    dtype: str = "float32",
    force: bool = False,
    extra_files_from: str | os.PathLike | None = None,
) -> Path:
    """Write `dst/` = config.json + model.safetensors (+ tokenizer/preprocessor files found in `extra_files_from`).

    Everything is written into a temporary folder beside `dst` and renamed into place at the end, so an
    interruption leaves either nothing or the previous `dst`. An existing `dst` is replaced only with `force`.
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dst = Path(dst)
    _check_destination(dst, force)
    tensors = _hf_state(config, state)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        write_safetensors(tmp / "model.safetensors", tensors, dtype)
        config_dict = config.to_dict()
        config_dict["torch_dtype"] = dtype  # informative: transformers loads into float32 unless asked otherwise
        write_json_atomic(tmp / "config.json", config_dict)
        if extra_files_from is not None:
            for name in TOKENIZER_FILES:
                if (Path(extra_files_from) / name).is_file():
                    shutil.copyfile(Path(extra_files_from) / name, tmp / name)  # follows the HF cache's symlinks
        if not (tmp / "vocab.json").is_file() and config.text_config.vocab_size == 49408:
            from ..preprocessing.processor import CLIPProcessor

            CLIPProcessor.from_pretrained().save_pretrained(tmp)  # CLIP's files, as the Hub repos carry them
        as_if_created(tmp, folder=True)  # 0755 under the usual umask, not mkdtemp's 0700
        _move_into_place(tmp, dst, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _check_destination(dst: Path, force: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise CheckpointError(f"{dst} exists and is not a folder")
    if dst.exists() and not force:
        raise CheckpointError(f"{dst} already exists; pass force=True to replace it")


def _move_into_place(tmp: Path, dst: Path, force: bool) -> None:
    """Rename the finished folder to `dst`; an old `dst` (force) is moved aside first and deleted last."""
    _check_destination(dst, force)
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        if old is not None:
            os.replace(old / dst.name, dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert(
    src: str | os.PathLike, dst: str | os.PathLike, dtype: str = "float32", force: bool = False,
    revision: str | None = None,
) -> Path:  # fmt: skip
    """Any checkpoint (HF folder or file, NVlabs .pth, Hub repo id) -> an HF safetensors folder at `dst`."""
    from .weights import load_checkpoint

    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    _check_destination(Path(dst), force)  # fail before reading hundreds of megabytes
    from ..hub import resolve

    source = resolve(src, revision, kind="model")
    config, state = load_checkpoint(source)
    folder = source if source.is_dir() else source.parent
    return write_checkpoint(config, state, dst, dtype=dtype, force=force, extra_files_from=_extra_files(folder))


def _extra_files(folder: Path) -> Path | None:
    """Where to take tokenizer/preprocessor files from: an HF source folder (a release .pth sits among unrelated
    files, so none is taken there; `write_checkpoint` then writes CLIP's own)."""
    return folder if (folder / "config.json").is_file() else None
