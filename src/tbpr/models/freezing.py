"""Freezing parameters by name and removing transformer blocks, for the model config's layer options."""

from __future__ import annotations

import difflib

from torch import nn

from tbpr.errors import ConfigError


def resolve_layers(indices: list[int], depth: int, field: str) -> list[int]:
    """Normalize (possibly negative) block indices of a ``depth``-block tower; reject bad or repeated ones."""
    resolved = []
    for index in indices:
        if not -depth <= index < depth:
            raise ConfigError(
                f"{field}: layer {index} out of range, the text tower has {depth} blocks (0..{depth - 1})"
            )
        resolved.append(index % depth)
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"{field}={indices} names a layer twice")
    return sorted(resolved)


def drop_blocks(blocks: nn.ModuleList, drop: list[int]) -> nn.ModuleList:
    """The blocks not listed in ``drop`` (already resolved), in order; at least one must remain."""
    kept = [block for i, block in enumerate(blocks) if i not in drop]
    if not kept:
        raise ConfigError(f"model.drop_text_layers={drop} removes every text layer; keep at least one")
    return nn.ModuleList(kept)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze_prefixes(model: nn.Module, prefixes: list[str], field: str = "model.freeze") -> None:
    """Set ``requires_grad=False`` on every parameter whose dotted name is, or starts with, a prefix.

    A prefix matches whole name components ("clip.visual.conv1" covers "clip.visual.conv1.weight" but
    "clip.transformer.resblocks.1" does not cover block 10). A prefix matching nothing is a ConfigError.
    """
    params = dict(model.named_parameters())
    for prefix in prefixes:
        hits = [p for name, p in params.items() if _matches(name, prefix)]
        if not hits:
            close = difflib.get_close_matches(prefix, list(params), n=5, cutoff=0.5)
            examples = close or list(params)[:5]
            raise ConfigError(
                f"{field}: {prefix!r} matches no parameter of the model; parameter names look like "
                f"{', '.join(examples)} (a prefix covers whole dotted components)"
            )
        for param in hits:
            param.requires_grad_(False)


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """Put every BatchNorm layer whose parameters are all frozen in eval mode: it normalizes with its
    (pretrained) running statistics and stops updating them. Call after ``model.train()``."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()
