"""The command line's progress bars: shown on a terminal, absent from scripts' and logs' output."""

import sys

from fraudgraph import cli


def test_progress_is_quiet_when_stdout_is_not_a_terminal(capsys):
    with cli._progress(total=3, desc="train") as bar:
        bar.update(3)
    assert capsys.readouterr() == ("", "")


def test_progress_shows_counts_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with cli._progress(total=3, desc="train", unit="epoch") as bar:
        for _ in range(3):
            bar.update(1)
    out, err = capsys.readouterr()
    assert out == "" and "train" in err and "3/3" in err
