"""The ``tfdmnet`` command line: train and evaluate TFDMNets, count operations, benchmark EMLs."""

from tfdmnet.cli._common import app
from tfdmnet.cli._measure import bench, models, ops
from tfdmnet.cli._run import evaluate_cmd, train

app.command()(models)
app.command()(train)
app.command("eval")(evaluate_cmd)
app.command()(ops)
app.command()(bench)

__all__ = ["app"]
