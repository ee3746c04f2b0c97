"""A command signal that arrives between a node's polls waits for its next poll."""

import pytest

from adapters.command_signals import CommandSignals


def test_a_signal_between_polls_reaches_the_next_poll_once() -> None:
    signals = CommandSignals()
    signals.notify("n1", "c1")  # nobody is polling for n1 right now
    with signals.waiter("n1") as waiter:
        assert waiter.take() == ["c1"]
        signals.notify("n1", "c2")
        assert waiter.take() == ["c2"]
    with signals.waiter("n1") as waiter:
        assert waiter.take() == []  # handed over once
    with signals.waiter("n2") as waiter:
        assert waiter.take() == []


def test_an_old_signal_is_not_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    signals = CommandSignals()
    monkeypatch.setattr(CommandSignals, "KEPT_S", -1.0)
    signals.notify("n1", "c1")
    with signals.waiter("n1") as waiter:
        assert waiter.take() == []
