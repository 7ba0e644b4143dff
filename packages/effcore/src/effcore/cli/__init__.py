"""effcore's CLI and the shared CLI pieces (option aliases, error convention) other packages reuse."""

from effcore.cli._app import app
from effcore.cli._common import (
    DataDirOpt,
    DeviceOpt,
    EffmlGroup,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    make_app,
    progress_bar,
    render_table,
    stage_reporter,
    write_out,
)

__all__ = [
    # shared option aliases
    "DataDirOpt",
    "DeviceOpt",
    # app plumbing
    "EffmlGroup",
    "OutOpt",
    "SeedOpt",
    # the effcore app
    "app",
    "console",
    "err_console",
    "make_app",
    "progress_bar",
    "render_table",
    "stage_reporter",
    "write_out",
]
