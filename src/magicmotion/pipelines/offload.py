"""Model CPU offload by groups: one group of components on the GPU at a time.

diffusers' `enable_model_cpu_offload` chains the components of `model_cpu_offload_seq`, each hook putting
the one before it back on the CPU, and gives every other component (our ControlNets) a hook of its own
that only loads it: a ControlNet then stays on the GPU until the call ends, through the expert switch
of Wan2.2 A14B (the high-noise expert's ControlNet beside the low-noise one's) and through the VAE
decode. Here a base transformer and its ControlNet form one group (they run together every step), and
before any component of a group runs, every component outside the group goes back to the CPU.
"""

from __future__ import annotations

from accelerate.hooks import CpuOffload, add_hook_to_module, remove_hook_from_module


class GroupCpuOffload(CpuOffload):
    """accelerate's `CpuOffload` whose pre-forward first puts `others` (their `UserCpuOffloadHook`s) back
    on the CPU (`.to("cpu")`, nothing moves for one there already)."""

    def __init__(self, execution_device, others):
        super().__init__(execution_device=execution_device)
        self.others = others

    def pre_forward(self, module, *args, **kwargs):
        for other in self.others:
            other.offload()
        return super().pre_forward(module, *args, **kwargs)


def offload_by_groups(pipe, groups: tuple[tuple[str, ...], ...]) -> None:
    """Rewire the hooks `enable_model_cpu_offload` left on `pipe` (`pipe._all_hooks`) so that running a
    component of one group (names of components; None components are skipped) offloads every hooked
    component outside it. Components in no group keep diffusers' hook."""
    hooks = {id(h.model): h for h in getattr(pipe, "_all_hooks", [])}
    named = {}
    for group in groups:
        for name in group:
            module = getattr(pipe, name, None)
            if module is not None and id(module) in hooks:
                named[name] = hooks[id(module)]
    for group in groups:
        others = [hook for name, hook in named.items() if name not in group]
        for name in group:
            if name not in named:
                continue
            user_hook = named[name]
            device = user_hook.hook.execution_device
            remove_hook_from_module(user_hook.model)
            user_hook.hook = GroupCpuOffload(device, others)
            add_hook_to_module(user_hook.model, user_hook.hook, append=True)


__all__ = ["GroupCpuOffload", "offload_by_groups"]
