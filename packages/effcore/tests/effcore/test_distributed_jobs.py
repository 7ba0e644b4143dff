"""How a failed job is explained: each rank's failure classified, and the root cause named, whatever
order torchrun observed the ranks in (the end-to-end torchrun runs are paradyse's test_cli.py)."""

from __future__ import annotations

import pytest
import torch

from effcore.distributed import EXIT_CODES, classify_failure, root_cause
from effcore.errors import ConfigError, EffmlError

# What gloo raised on the surviving rank of a 2-rank torchrun job (torch 2.15): its peer exited, and
# its peer stopped answering (3 s timeout).
GLOO_LOST = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
    "[127.0.0.1]:40103. This is typically caused by a remote worker crashing. Check the logs of the remote "
    "worker before reporting an error."
)
GLOO_TIMEOUT = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting "
    "3000ms for send operation to complete"
)


def _shape_bug() -> RuntimeError:
    try:
        torch.ones(2, 3) @ torch.ones(4, 5)
    except RuntimeError as err:
        return err
    raise AssertionError("the matmul should have failed")


def test_a_lost_peer_a_timeout_and_an_error_in_the_step_are_told_apart():
    kind, msg = classify_failure(RuntimeError(GLOO_LOST), 3.0)
    assert (
        kind == "lost"
        and msg == "lost contact with another rank (Connection closed by peer [127.0.0.1]:40103)"
    )
    kind, msg = classify_failure(RuntimeError(GLOO_TIMEOUT), 3.0)
    assert kind == "timeout" and msg.startswith(
        "timed out after 3 s waiting for another rank (Timed out waiting"
    )
    kind, msg = classify_failure(_shape_bug(), 3.0)
    assert (
        kind == "step"
        and msg.startswith("failed: RuntimeError: ")
        and msg.endswith("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
    )
    assert classify_failure(ValueError("empty"), 3.0) == ("step", "failed: ValueError: empty")
    assert classify_failure(ConfigError("bad --x", hint="fix it"), 3.0) == ("input", "bad --x (fix it)")
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)


def _report(rank: int, kind: str, message: str = "...") -> dict:
    return {"rank": rank, "kind": kind, "message": message}


@pytest.mark.parametrize("died", [[(0, -6), (1, 17)], [(1, 17), (0, -6)], [(1, 17), (0, -15)], [(1, 17)]])
def test_the_rank_that_died_is_the_root_cause_not_the_peer_that_lost_it(died):
    # torchrun names the "first observed failure" at one-second resolution: either rank can come first
    err = root_cause([_report(0, "lost", "lost contact with another rank (...)")], died, 1)
    assert str(err).startswith("rank 1 died with exit code 17 without reporting an error")


def test_a_ranks_own_error_comes_before_the_peers_that_lost_it():
    reports = [_report(0, "lost"), _report(1, "step", "failed: RuntimeError: shapes"), _report(2, "timeout")]
    assert str(root_cause(reports, [(0, 3), (1, 1), (2, 4)], 1)).startswith("rank 1: failed: RuntimeError")
    reports.append(_report(3, "input", "the profile does not match"))
    assert str(root_cause(reports, [], 1)).startswith("rank 3: the profile does not match")


def test_a_timeout_names_the_rank_that_waited_not_the_hung_rank_torchrun_stopped():
    # the hung rank says nothing and is stopped by torchrun (SIGTERM): not a silent death
    err = root_cause([_report(0, "timeout", "timed out after 3 s waiting for another rank (...)")],
                     [(0, 4), (1, -15)], 1)  # fmt: skip
    assert str(err).startswith("rank 0: timed out after 3 s") and "--rank-timeout" in str(err)


def test_a_rank_killed_by_the_oom_killer_says_so():
    assert "out-of-memory" in str(root_cause([], [(2, -9)], 1))


def test_parse_bytes_reads_decimal_and_binary_units():
    from effcore.cli import parse_bytes

    assert (
        parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("80GB") == 80 * 10**9 and parse_bytes("512") == 512
    )
    assert parse_bytes("0", flag="--margin", positive=False) == 0
    with pytest.raises(EffmlError, match="--memory-cap must be positive"):
        parse_bytes("0GiB")
    with pytest.raises(EffmlError, match="cannot read a memory size"):
        parse_bytes("lots")
