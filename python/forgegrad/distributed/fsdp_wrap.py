"""Which parameters FullyShardedDataParallel gathers together: its units (torch.distributed.fsdp.wrap).

A unit is a module whose parameters (less those of units inside it) are gathered for its forward and its
backward; the root module is always one. Its module must be the only one that reads them: a parameter read
by another module while its unit is freed (a tied LM head computed as ``F.linear(x, wte.weight)`` in the
root, GPT-2's ``wpe.weight`` read by the model rather than by ``wpe``) is an error (fsdp.py). So the units
of a transformer are its repeated blocks, with the embeddings, a tied head and the final norm in the root:

* ``units=[...]``: the modules themselves.
* ``auto_wrap_policy=``: torch's callable ``policy(module=, recurse=, nonwrapped_numel=) -> bool``, applied
  as torch's ``_recursive_wrap`` does: :func:`transformer_auto_wrap_policy` (with ``functools.partial`` and
  ``transformer_layer_cls={Block}``), :func:`size_based_auto_wrap_policy`, :class:`ModuleWrapPolicy`,
  :func:`lambda_auto_wrap_policy`; torch's own functions work too (they only test ``isinstance``).
* neither: the blocks the model declares, as transformers' ``_no_split_modules`` (the class names of its
  blocks; accelerate's ``device_map`` reads the same list). forgegrad's Hugging Face models declare theirs;
  a model (or a submodule) declaring it gets a unit per module of those classes (or of a subclass of one),
  the outermost ones. A model declaring none: a unit per module that owns parameters directly.

Two more class attributes refine the declared units (names of submodules, matched against the end of their
dotted names), for the parts of a block that the model runs outside the block's forward:
``_fsdp_root_modules`` keeps their parameters in the root unit (T5's relative-position table of the first
block, which the stack reads to bias every block's attention); ``_fsdp_nested_units`` makes each a unit of its
own inside its block's (the decoder's cross-attention key and value projections, which the model runs once
over the encoder's output before the blocks: T5, BART, Whisper).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Set, Type

from ..nn.module import Module
from ..nn.container import ModuleDict, ModuleList

__all__ = ["transformer_auto_wrap_policy", "size_based_auto_wrap_policy", "lambda_auto_wrap_policy",
           "ModuleWrapPolicy", "declared_blocks"]


def transformer_auto_wrap_policy(module: Module, recurse: bool, nonwrapped_numel: int,
                                 transformer_layer_cls: Set[Type[Module]]) -> bool:
    """A unit per module of one of ``transformer_layer_cls`` (torch's; bind it with functools.partial)."""
    return True if recurse else isinstance(module, tuple(transformer_layer_cls))


def lambda_auto_wrap_policy(module: Module, recurse: bool, nonwrapped_numel: int,
                            lambda_fn: Callable[[Module], bool]) -> bool:
    """A unit per module for which ``lambda_fn(module)`` is true."""
    return True if recurse else bool(lambda_fn(module))


def size_based_auto_wrap_policy(module: Module, recurse: bool, nonwrapped_numel: int, min_num_params: int = int(1e8),
                                force_leaf_modules: Optional[Set[type]] = None,
                                exclude_wrap_modules: Optional[Set[type]] = None) -> bool:
    """A unit per module holding at least ``min_num_params`` parameters that no unit inside it holds
    (torch's; containers, ``exclude_wrap_modules``, are never units; ``force_leaf_modules`` are not looked into)."""
    force_leaf = tuple(force_leaf_modules or ())
    exclude = tuple(exclude_wrap_modules if exclude_wrap_modules is not None else (ModuleList, ModuleDict))
    if recurse:
        return nonwrapped_numel >= min_num_params and not (force_leaf and isinstance(module, force_leaf))
    return nonwrapped_numel >= min_num_params and not isinstance(module, exclude)


class ModuleWrapPolicy:
    """A unit per module of one of ``module_classes`` (torch's)."""

    def __init__(self, module_classes):
        classes = tuple(module_classes)
        bad = [c for c in classes if not (isinstance(c, type) and issubclass(c, Module))]
        if bad:
            raise TypeError(f"ModuleWrapPolicy: module_classes must be Module subclasses, got {bad!r}")
        self._module_classes = set(classes)

    def __call__(self, module: Module, recurse: bool, *args, **kwargs) -> bool:
        return True if recurse else isinstance(module, tuple(self._module_classes))

    def __repr__(self) -> str:
        return f"ModuleWrapPolicy({sorted(c.__name__ for c in self._module_classes)})"


def _declared(module: Module, attribute: str) -> Set[str]:
    """The names ``module`` and its submodules list in their class attribute ``attribute``."""
    names: Set[str] = set()
    for m in module.modules():
        names.update(getattr(type(m), attribute, None) or ())
    return names


def _named_like(module: Module, names: Set[str]) -> List[Module]:
    """The submodules whose dotted names end with one of ``names``."""
    return [m for k, m in module.named_modules() if k and any(k == n or k.endswith("." + n) for n in names)]


def declared_blocks(module: Module) -> Optional[List[Module]]:
    """The outermost submodules of a class (or a subclass of a class) named in the ``_no_split_modules`` of
    ``module`` or of one of its submodules, and the ``_fsdp_nested_units``; None where none declares them."""
    names = _declared(module, "_no_split_modules")
    if not names:
        return None
    blocks: List[Module] = []
    inside: Set[int] = set()
    for m in module.modules():  # parents before their children
        if id(m) in inside or m is module:
            continue
        if any(c.__name__ in names for c in type(m).__mro__):
            blocks.append(m)
            inside.update(id(x) for x in m.modules())
    if not blocks:
        raise ValueError(f"FullyShardedDataParallel: {type(module).__name__} declares _no_split_modules "
                         f"{sorted(names)}, but none of its submodules is of those classes; pass units=[...] or "
                         "auto_wrap_policy=")
    return blocks + _named_like(module, _declared(module, "_fsdp_nested_units"))


def policy_units(module: Module, policy) -> List[Module]:
    """The modules torch's ``_recursive_wrap`` wraps under ``policy`` (the root is not among them)."""
    if not callable(policy):
        raise TypeError(f"FullyShardedDataParallel: auto_wrap_policy must be callable as policy(module=, recurse=, "
                        f"nonwrapped_numel=) (e.g. functools.partial(transformer_auto_wrap_policy, "
                        f"transformer_layer_cls={{Block}})), got {type(policy).__name__}")
    units: List[Module] = []

    def wrap(m: Module, root: bool) -> int:  # the parameters wrapped below and at m
        numel = sum(p.numel() for p in m.parameters())
        if not policy(module=m, recurse=True, nonwrapped_numel=numel):
            return 0
        wrapped = sum(wrap(c, False) for c in m.children() if c is not None)
        if not root and policy(module=m, recurse=False, nonwrapped_numel=numel - wrapped):
            units.append(m)
            return numel
        return wrapped

    wrap(module, True)
    order = {id(m): i for i, m in enumerate(module.modules())}
    return sorted(units, key=lambda m: order[id(m)])


def unit_modules(module: Module, units, auto_wrap_policy) -> List[Module]:
    """The unit modules besides the root: ``units``, else ``auto_wrap_policy``'s, else the declared blocks,
    else every module that owns parameters requiring gradients directly."""
    if units is not None and auto_wrap_policy is not None:
        raise ValueError("FullyShardedDataParallel: pass units= or auto_wrap_policy=, not both")
    if units is not None:
        return list(units)
    if auto_wrap_policy is not None:
        return policy_units(module, auto_wrap_policy)
    blocks = declared_blocks(module)
    if blocks is not None:
        return blocks
    return [m for m in module.modules() if any(p is not None and p.requires_grad for p in m._parameters.values())]


def assign(module: Module, units, auto_wrap_policy, named) -> list:
    """[(module, its unit's parameters)] in forward registration order, the root's first. A parameter belongs to
    the innermost unit holding it when all the others contain it; otherwise (tied across units that do not
    nest, or no unit) to the root, as do the default units' ``_fsdp_root_modules``."""
    order = {id(m): i for i, m in enumerate(module.modules())}
    modules = unit_modules(module, units, auto_wrap_policy)
    for m in modules:
        if not isinstance(m, Module) or id(m) not in order:
            raise ValueError(f"FullyShardedDataParallel: units must be submodules of the module, got "
                             f"{type(m).__name__}")
    inside = {id(m): {id(x) for x in m.modules()} for m in modules}
    holders: Dict[int, List[Module]] = {}
    for m in modules:
        for p in m.parameters():
            holders.setdefault(id(p), []).append(m)
    root_held = set() if units is not None or auto_wrap_policy is not None else {
        id(p) for m in _named_like(module, _declared(module, "_fsdp_root_modules")) for p in m.parameters()}
    groups: Dict[int, tuple] = {}
    for _, p in named:
        ms = [] if id(p) in root_held else holders.get(id(p), [])
        inner = next((m for m in ms if all(id(m) in inside[id(o)] for o in ms)), None)
        m = inner if inner is not None else module
        groups.setdefault(id(m), (m, []))[1].append(p)
    return sorted(groups.values(), key=lambda mp: order[id(mp[0])])

