"""effcore's CLI and the shared CLI pieces (option aliases, error convention) other packages reuse."""

from effcore.cli._app import app
from effcore.cli._common import (
    DataDirOpt,
    DeviceOpt,
    EffmlGroup,
    JsonOutOpt,
    OutOpt,
    PlotOpt,
    SeedOpt,
    console,
    err_console,
    int_list,
    make_app,
    out_option,
    parse_bytes,
    progress_bar,
    render_table,
    stage_reporter,
    write_out,
)

__all__ = [  # noqa: RUF022 -- grouped by role, sorted within groups
    # the effcore app
    "app",
    # shared option aliases
    "DataDirOpt",
    "DeviceOpt",
    "JsonOutOpt",
    "OutOpt",
    "PlotOpt",
    "SeedOpt",
    # app plumbing and output
    "EffmlGroup",
    "console",
    "err_console",
    "int_list",
    "make_app",
    "out_option",
    "parse_bytes",
    "progress_bar",
    "render_table",
    "stage_reporter",
    "write_out",
]
