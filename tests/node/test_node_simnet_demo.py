"""``python -m simnet demo`` (what ``make demo`` runs), shortened: it must end well and clean up."""

import pytest

from simnet.demo import main

pytestmark = pytest.mark.slow


def test_short_demo_gossips_every_order_to_every_node_and_exits_0(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["gossip", "--nodes", "3", "--duration", "12", "--tick-ms", "300", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "every node saw all of them: yes" in text
    assert "n0-station=0, n1-household=0, n2-household=0" in text
    assert sorted(p.name for p in out.iterdir()) == ["n0-station", "n1-household", "n2-household"]


def test_demo_refuses_nonsense_arguments(capsys):
    assert main(["demo", "--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err
