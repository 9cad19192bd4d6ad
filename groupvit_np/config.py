"""Configurations with transformers' field names and defaults (`GroupViTConfig` and its two tower configs).

`from_pretrained(dir)` reads a Hugging Face `config.json`, including the 2022 files that carry
`text_config_dict`/`vision_config_dict` and the legacy text ids bos 0 / eos 2 (which select argmax pooling).
`save_pretrained(dir)` writes a file that transformers reads back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """The entries of `d` that are fields of dataclass `cls` (HF configs carry many generic extras)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def umask() -> int:
    """The process's umask: from /proc where Linux has it, else by setting it and putting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the permissions that open() or mkdir()
    would have given it (0644 / 0755 under the usual umask 022), before it is renamed into place."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON through a temporary file and a rename, so no reader sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        as_if_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _ConfigMixin:
    model_type = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls(**_known(cls, d))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "model_type": self.model_type}

    @classmethod
    def from_json(cls, path: str | os.PathLike):
        """Read a config file; a broken one is a ValueError that names it."""
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError, AttributeError) as e:  # wrong types: "depths": "3", "text_config": 1
            raise ValueError(f"{path}: not a usable {cls.__name__} ({e})") from None

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


@dataclass
class GroupViTTextConfig(_ConfigMixin):
    """The CLIP-style text tower (transformers' `GroupViTTextConfig`)."""

    model_type = "groupvit_text_model"
    vocab_size: int = 49408
    hidden_size: int = 256
    intermediate_size: int = 1024
    num_hidden_layers: int = 12
    num_attention_heads: int = 4
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    @property
    def legacy_eos_pooling(self) -> bool:
        """True for configs from 2022 (eos_token_id == 2): pool at argmax(input_ids) instead of the first EOS."""
        return self.eos_token_id == 2


@dataclass
class GroupViTVisionConfig(_ConfigMixin):
    """The grouping vision tower (transformers' `GroupViTVisionConfig`)."""

    model_type = "groupvit_vision_model"
    hidden_size: int = 384
    intermediate_size: int = 1536
    depths: list[int] = field(default_factory=lambda: [6, 3, 3])
    num_hidden_layers: int = 12
    num_group_tokens: list[int] = field(default_factory=lambda: [64, 8, 0])
    num_output_groups: list[int] = field(default_factory=lambda: [64, 8, 8])
    num_attention_heads: int = 6
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    dropout: float = 0.0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    initializer_factor: float = 1.0
    assign_eps: float = 1.0
    assign_mlp_ratio: list[float] = field(default_factory=lambda: [0.5, 4])

    def __post_init__(self) -> None:
        n = len(self.depths)
        if not (len(self.num_group_tokens) == len(self.num_output_groups) == n):
            raise ValueError(
                f"depths, num_group_tokens and num_output_groups must have one entry per stage, got "
                f"{self.depths}, {self.num_group_tokens}, {self.num_output_groups}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")


@dataclass
class GroupViTConfig(_ConfigMixin):
    """Both towers plus the projection heads (transformers' `GroupViTConfig`)."""

    model_type = "groupvit"
    text_config: GroupViTTextConfig = field(default_factory=GroupViTTextConfig)
    vision_config: GroupViTVisionConfig = field(default_factory=GroupViTVisionConfig)
    projection_dim: int = 256
    projection_intermediate_dim: int = 4096
    logit_scale_init_value: float = 2.6592
    output_segmentation: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GroupViTConfig:
        """Build from a config.json dict, applying transformers' legacy `*_config_dict` rule.

        When `text_config_dict` is present, transformers completes it with the tower defaults and lets the result
        override `text_config` entirely (likewise for vision); we do the same. A tower's own config (what HF's
        `GroupViTTextModel.save_pretrained` writes, model_type `groupvit_text_model`) becomes that tower of a
        default config, so tower checkpoints load into the tower models.
        """
        towers = {GroupViTTextConfig.model_type: "text_config", GroupViTVisionConfig.model_type: "vision_config"}
        if d.get("model_type") in towers:
            d = {towers[d["model_type"]]: d}
        text = dict(d.get("text_config") or {})
        vision = dict(d.get("vision_config") or {})
        if d.get("text_config_dict") is not None:
            text.update(GroupViTTextConfig.from_dict(d["text_config_dict"]).to_dict())
        if d.get("vision_config_dict") is not None:
            vision.update(GroupViTVisionConfig.from_dict(d["vision_config_dict"]).to_dict())
        top = _known(cls, d)
        top.pop("text_config", None), top.pop("vision_config", None)
        return cls(GroupViTTextConfig.from_dict(text), GroupViTVisionConfig.from_dict(vision), **top)

    @classmethod
    def from_text_vision_configs(
        cls, text_config: GroupViTTextConfig, vision_config: GroupViTVisionConfig, **kwargs: Any
    ) -> GroupViTConfig:
        return cls(text_config=text_config, vision_config=vision_config, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, revision: str | None = None) -> GroupViTConfig:
        """Read `config.json` from a checkpoint folder (or the file itself), or a Hub repo id at `revision`."""
        from .hub import resolve

        path = resolve(path, revision, kind="config")
        return cls.from_json(path / CONFIG_NAME if path.is_dir() else path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "architectures": ["GroupViTModel"],
            "model_type": self.model_type,
            "text_config": self.text_config.to_dict(),
            "vision_config": self.vision_config.to_dict(),
            "projection_dim": self.projection_dim,
            "projection_intermediate_dim": self.projection_intermediate_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "output_segmentation": self.output_segmentation,
        }

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` into `directory` (created if needed), atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / CONFIG_NAME, self.to_dict())
        return directory / CONFIG_NAME
