"""Optimiser operations on bound splats, apart from the model (as gsplat's ``strategy/ops.py``):
one Adam per splat attribute, and rebuilding rows (split, clone, prune, reset) together with their
Adam moments so that a surviving splat keeps its optimiser state."""
from __future__ import annotations

import inspect

import torch

from scene.model.gaussian_model import BoundGaussians
from utils.errors import UserFacingError

__all__ = ["make_splat_optimizers", "make_network_optimizer", "replace_splat_rows", "drop_frozen_gradients"]

#: Keys of a component's param group that are ours, not Adam's (Component.param_groups).
OWN_GROUP_KEYS = ("params", "name", "frozen_until")


def make_splat_optimizers(gaussians: BoundGaussians, lrs: dict[str, float]) -> dict[str, torch.optim.Adam]:
    """One Adam per attribute of ``gaussians`` (``lrs`` maps attribute name -> learning rate;
    attributes the splats lack, e.g. SH for a triplane avatar, are ignored)."""
    missing = set(gaussians.params) - set(lrs)
    if missing:
        raise ValueError(f"no learning rate given for splat attributes {sorted(missing)}")
    return {
        name: torch.optim.Adam([{"params": [param], "lr": lrs[name], "name": name}], eps=1e-15)
        for name, param in gaussians.params.items()
    }


def replace_splat_rows(gaussians: BoundGaussians, optimizers: dict, fn_param, fn_state, binding: torch.Tensor) -> None:
    """Rebuild every attribute (and its Adam moments) after a change of splat count.

    Args:
        fn_param: ``(name, tensor (N, ...)) -> tensor (M, ...)``, the new parameter values.
        fn_state: ``(name, moment key, tensor (N, ...)) -> tensor (M, ...)``, the new Adam moments.
        binding: (M,) the new rows' triangles.
    """
    for name in list(gaussians.params):
        old = gaussians.params[name]
        new = torch.nn.Parameter(fn_param(name, old.data))
        opt = optimizers.get(name)
        if opt is not None:
            state = opt.state.pop(old, None)
            opt.param_groups[0]["params"] = [new]
            if state is not None:
                for key, value in list(state.items()):
                    if key != "step" and torch.is_tensor(value) and value.shape == old.shape:
                        state[key] = fn_state(name, key, value)
                opt.state[new] = state
        gaussians.params[name] = new
    gaussians.binding = binding


def make_network_optimizer(groups: list[dict]) -> torch.optim.Adam | None:
    """One Adam over the components' network ``groups`` (:meth:`Component.param_groups`), None
    when there are none. A group key that is neither ours nor an argument of this torch's Adam
    (a typo, or e.g. ``decoupled_weight_decay`` on a torch too old for it) is one error: Adam
    would keep it without using it, and the method would quietly train differently."""
    if not groups:
        return None
    supported = set(inspect.signature(torch.optim.Adam).parameters) | set(OWN_GROUP_KEYS)
    for group in groups:
        unknown = sorted(set(group) - supported)
        if unknown:
            raise UserFacingError(
                f"parameter group '{group.get('name', '?')}' sets {', '.join(unknown)}, which this torch "
                f"{torch.__version__}'s Adam does not take: upgrade torch (pip install -U 'torch>=2.6'), or "
                "fix the component's param_groups")
    return torch.optim.Adam(groups)


def drop_frozen_gradients(optimizer: torch.optim.Optimizer, step: int) -> None:
    """Drop the gradients of the groups of ``optimizer`` that declare ``frozen_until`` >= ``step``
    (the 1-based iteration about to update): Adam then leaves their parameters, moments and step
    counts as they are (a frozen network, e.g. NPGA's prior F for its first iterations)."""
    for group in optimizer.param_groups:
        if step <= group.get("frozen_until", 0):
            for p in group["params"]:
                p.grad = None
