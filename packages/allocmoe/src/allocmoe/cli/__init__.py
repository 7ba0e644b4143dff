"""The ``allocmoe`` command line: build a MoE, profile it, allocate budgets, evaluate, benchmark, generate.

Thin over the library: models load through :func:`allocmoe.models.load_model`, token blocks come from
:func:`allocmoe.data.eval_blocks`; every option is checked before a model is loaded. One module per
command group; importing them registers the commands on :data:`app`, in the order ``--help`` lists.
"""

from allocmoe.cli._common import app

# isort: off
from allocmoe.cli import _build, _profiling, _eval, _bench, _generate  # noqa: F401  (registers the commands)
# isort: on

__all__ = ["app"]
