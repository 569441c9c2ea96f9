"""Which parameters belong to the vision encoder, the connector and the language model.

Roles come from the model's real structure: the family table's module paths when the family is known,
else the sub-modules whose config *is* the model's `vision_config` / `text_config`. Never from
substrings such as "image" in a parameter name.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .families import family_for

ROLES = ("vision", "connector", "language")


@dataclass
class ModuleRoles:
    paths: dict[str, tuple[str, ...]]  # role -> module paths

    def role_of(self, parameter_name: str) -> str | None:
        """The role whose most specific path prefixes the name (a connector nested in the vision tower wins)."""
        best, best_length = None, -1
        for role, paths in self.paths.items():
            for path in paths:
                if (parameter_name == path or parameter_name.startswith(path + ".")) and len(path) > best_length:
                    best, best_length = role, len(path)
        return best


def _structural_paths(model: nn.Module) -> dict[str, tuple[str, ...]]:
    config = model.config
    vision_type = type(getattr(config, "vision_config", None))
    text_type = type(getattr(config, "text_config", None))
    found: dict[str, list[str]] = {role: [] for role in ROLES}
    for name, module in model.named_modules():
        sub_config = getattr(module, "config", None)
        if sub_config is None or module is model or name.count(".") > 2:
            continue
        if type(sub_config) is vision_type and not any(name.startswith(p + ".") for p in found["vision"]):
            found["vision"].append(name)
        elif type(sub_config) is text_type and not any(name.startswith(p + ".") for p in found["language"]):
            found["language"].append(name)
    if not found["vision"] or not found["language"]:
        raise ValueError(f"cannot find the vision encoder and language model of {type(model).__name__} from its "
                         f"sub-configs; add the family to visiontune/models/families.py")
    output_head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is output_head:
            found["language"].append(name)
    claimed = tuple(found["vision"] + found["language"])
    # Whatever top-level part of the base model is left over (projector, merger) is the connector.
    for name, module in model.named_modules():
        unclaimed = not any(name == p or name.startswith(p + ".") or p.startswith(name + ".") for p in claimed)
        if name.count(".") == 1 and unclaimed and any(True for _ in module.parameters()):
            found["connector"].append(name)
    return {role: tuple(paths) for role, paths in found.items()}


def module_roles(model: nn.Module) -> ModuleRoles:
    family = family_for(getattr(model.config, "model_type", ""))
    if family is not None:
        return ModuleRoles({"vision": family.vision, "connector": family.connector, "language": family.language})
    return ModuleRoles(_structural_paths(model))


def parameters_by_role(model: nn.Module) -> dict[str, int]:
    roles = module_roles(model)
    counts = {role: 0 for role in ROLES + ("other",)}
    for name, parameter in model.named_parameters():
        counts[roles.role_of(name) or "other"] += parameter.numel()
    return counts
