"""The command line tells a user's mistake (one line, exit 2) from a bug (its traceback, never swallowed)."""

from __future__ import annotations

import pytest

from vitkit.cli import main as cli_main
from vitkit.cli import models as models_command
from vitkit.errors import MissingPathError, UsageError, VitkitError


def test_user_error_is_one_line_and_status_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli_main.main(["train", "--data", str(missing), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitkit train: error: ") and str(missing) in err
    assert "Traceback" not in err


def test_verbose_user_error_prints_its_traceback(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli_main.main(["-v", "train", "--data", str(missing), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "vitkit train: error: " in err


@pytest.mark.parametrize("bug", [ValueError("shape mismatch deep inside torch"), FileNotFoundError("libfoo.so")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(models_command, "run", broken)
    with pytest.raises(type(bug), match=str(bug)):
        cli_main.main(["models"])


def test_user_errors_are_still_builtin_errors():
    # API users who catch ValueError / FileNotFoundError around vitkit keep working.
    assert issubclass(UsageError, ValueError) and issubclass(UsageError, VitkitError)
    assert issubclass(MissingPathError, FileNotFoundError) and issubclass(MissingPathError, VitkitError)
