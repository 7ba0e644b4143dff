"""Root conftest: the shared test configuration lives in the effcore pytest plugin.

``effcore.testing.plugin`` is auto-loaded through its ``pytest11`` entry point in every environment
where effcore is installed (the workspace and each package's isolated environment), so the settings
are identical everywhere: TRITON_INTERPRET=1 without CUDA, hypothesis profiles ``dev``/``ci``
(derandomized when $CI is set), the gpu/slow markers, per-test seeding and the ``device`` fixture.
"""

pytest_plugins = ["pytester"]  # effcore's plugin tests run inline pytest sessions
