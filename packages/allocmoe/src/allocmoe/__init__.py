"""allocmoe: Alloc-MoE expert-activation budgets for MoE inference.

The public API is imported lazily (so ``allocmoe --help`` does not pay for torch):

- budgets: :class:`ActivationBudget`, :class:`ThresholdPolicy`, :func:`parse_budget`
- running a model under a budget: :func:`budgeted`, :func:`apply_budget`
- Alloc-L: :func:`profile_sensitivity`, :class:`SensitivityProfile`, :func:`dp_allocate`
- adapters: :class:`MoEAdapter`, :func:`register_adapter`, :func:`find_moe_layers`
- evaluation: :func:`evaluate`, :func:`load_preservation`; the built model: :func:`build_moe`, :func:`load_moe`
"""

from __future__ import annotations

from effcore.lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "ActivationBudget": "allocmoe.budget",
    "ThresholdPolicy": "allocmoe.budget",
    "parse_budget": "allocmoe.budget",
    "budgeted": "allocmoe.runtime",
    "apply_budget": "allocmoe.runtime",
    "BudgetStats": "allocmoe.runtime",
    "profile_sensitivity": "allocmoe.alloc_l",
    "SensitivityProfile": "allocmoe.alloc_l",
    "dp_allocate": "allocmoe.alloc_l",
    "MoEAdapter": "allocmoe.adapters",
    "register_adapter": "allocmoe.adapters",
    "find_moe_layers": "allocmoe.adapters",
    "evaluate": "allocmoe.evaluation",
    "load_preservation": "allocmoe.load",
    "build_moe": "allocmoe.build",
    "load_moe": "allocmoe.build",
    "BuildRecipe": "allocmoe.build",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
