"""Test helpers shared by effml packages.

- ``effcore.testing.plugin``: the pytest plugin (auto-loaded): TRITON_INTERPRET, hypothesis
  profiles, gpu/slow markers, seeding, the ``device`` fixture;
- ``effcore.testing.strategies``: hypothesis strategies (meshes, layouts, seeded tensors);
- ``effcore.testing.tolerances``: ``(atol, rtol)`` per dtype and a labelled ``assert_close``;
- ``effcore.testing.tiny``: tiny random-weight HF models of every supported family;
- ``effcore.testing.images``: small CIFAR-10 / MNIST files in the data directory's layout;
- ``effcore.testing.distributed``: ``launch(fn, world_size)`` on real gloo process groups;
- ``effcore.testing.cli``: ``cli_ok`` / ``cli_fails``, a Typer app run in-process against effml's
  CLI convention (exit 2, the message, no traceback, one ``error:`` line).

Submodules are imported explicitly so that importing one does not pull in hypothesis or pytest.
"""
