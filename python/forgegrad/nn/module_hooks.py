"""nn.Module's hook registration (torch's register_*_hook methods), a mixin of Module (nn/module.py); the hooks
run in nn/hooks.py."""
from __future__ import annotations

from .hooks import RemovableHandle, add_hook, check_flag, check_hook, hook_store, note_hooks

__all__ = ["ModuleHookRegistration"]


class ModuleHookRegistration:
    """The register_*_hook methods of nn.Module."""

    # ---- hooks (torch's signatures and order: global hooks first, then the module's, prepend=True first) ----
    def register_forward_pre_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False) -> RemovableHandle:
        """Call ``hook(module, args)`` before every forward; a non-None result replaces the positional
        arguments (a tuple, or one value). with_kwargs: ``hook(module, args, kwargs)``, which returns None or
        ``(args, kwargs)``. Returns a handle whose ``remove()`` unregisters the hook (also a context manager).
        (torch's semantics; pruning's masks are applied by such a hook.)"""
        check_hook(hook, "register_forward_pre_hook")
        check_flag(prepend, "prepend", "register_forward_pre_hook")
        check_flag(with_kwargs, "with_kwargs", "register_forward_pre_hook")
        flags = hook_store(self, "_forward_pre_hooks_with_kwargs")
        handle = add_hook(hook_store(self, "_forward_pre_hooks"), hook, prepend, flags)
        if with_kwargs:
            flags[handle.id] = True
        return handle

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every forward (``hook(module, args, kwargs, output)`` with
        with_kwargs); a non-None result replaces the output. always_call: the hook also runs when forward
        (or an earlier hook) raised, before the error goes on. Returns a removable handle."""
        note_hooks()
        check_hook(hook, "register_forward_hook")
        for name, v in (("prepend", prepend), ("with_kwargs", with_kwargs), ("always_call", always_call)):
            check_flag(v, name, "register_forward_hook")
        kw, always = hook_store(self, "_forward_hooks_with_kwargs"), hook_store(self, "_forward_hooks_always_called")
        handle = add_hook(hook_store(self, "_forward_hooks"), hook, prepend, [kw, always])
        if with_kwargs:
            kw[handle.id] = True
        if always_call:
            always[handle.id] = True
        return handle

    def register_full_backward_pre_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, grad_output)`` when the gradients w.r.t. the module's outputs are computed; a
        non-None result (a tuple of one entry per output) replaces them. While registered, forward receives
        (and its caller gets) views of the tensors, as torch's."""
        note_hooks()
        check_hook(hook, "register_full_backward_pre_hook")
        check_flag(prepend, "prepend", "register_full_backward_pre_hook")
        return add_hook(hook_store(self, "_backward_pre_hooks"), hook, prepend)

    def register_full_backward_hook(self, hook, prepend: bool = False) -> RemovableHandle:
        """Call ``hook(module, grad_input, grad_output)`` once per backward, when the gradients w.r.t. the
        module's positional inputs are computed (entries None for non-tensor inputs and those that require no
        grad; if none does, at the outputs, with all None); a non-None result replaces grad_input."""
        note_hooks()
        check_hook(hook, "register_full_backward_hook")
        check_flag(prepend, "prepend", "register_full_backward_hook")
        return add_hook(hook_store(self, "_backward_hooks"), hook, prepend)

    def register_state_dict_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, prefix, keep_vars)`` before this module's entries go into a state_dict."""
        check_hook(hook, "register_state_dict_pre_hook")
        return add_hook(hook_store(self, "_state_dict_pre_hooks"), hook, False)

    def register_state_dict_post_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, state_dict, prefix, local_metadata)`` after this module's (and its children's)
        entries went into a state_dict; it may edit state_dict in place and must return None."""
        check_hook(hook, "register_state_dict_post_hook")
        return add_hook(hook_store(self, "_state_dict_hooks"), hook, False)

    def register_load_state_dict_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs)`` before load_state_dict reads this module's entries (state_dict: a copy the hook may edit,
        e.g. to rename old keys; appending to error_msgs makes the load raise)."""
        check_hook(hook, "register_load_state_dict_pre_hook")
        return add_hook(hook_store(self, "_load_state_dict_pre_hooks"), hook, False)

    def register_load_state_dict_post_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, incompatible_keys)`` after load_state_dict copied the values, before its strict
        check: the hook may edit incompatible_keys.missing_keys / unexpected_keys in place; it returns None."""
        check_hook(hook, "register_load_state_dict_post_hook")
        return add_hook(hook_store(self, "_load_state_dict_post_hooks"), hook, False)
