"""The pytest plugin, used by a fresh test file with no configuration (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

APP = """
from tidings import App, Command, Context, Decider, Event, Refused


class Deposit(Command):
    amount: int


class Deposited(Event):
    amount: int


app = App("bank", store="sqlite:///never-written.db")


@app.command
async def deposit(cmd: Deposit, ctx: Context) -> int:
    if cmd.amount <= 0:
        raise Refused("nothing to deposit", code="empty")
    ctx.publish(Deposited(cmd.amount), stream="account")
    return cmd.amount


@app.subscriber("ledger")
async def ledger(event: Deposited, ctx: Context) -> None:
    total = await ctx.get("ledger", "total") or 0
    ctx.put("ledger", "total", total + event.amount)


account = Decider(
    decide=lambda cmd, balance: [Deposited(cmd.amount)],
    evolve=lambda balance, event: balance + event.amount,
    initial=lambda: 0,
    stream=lambda cmd: "acct",
)
"""

TESTS = """
import pytest

from bank import Deposit, Deposited, Refused, account, app


async def test_on_the_harness(tidings_harness):
    harness = tidings_harness(app)
    assert await app.invoke(Deposit(5)) == 5
    await harness.settle()
    assert await app.get("ledger", "total") == 5


async def test_on_sqlite(tidings_sqlite, tmp_path):
    tidings_sqlite(app)
    assert str(tmp_path) in app.store.path
    with pytest.raises(Refused):
        await app.invoke(Deposit(0))
    await app.invoke(Deposit(3))
    await app.worker().drain()
    assert await app.get("ledger", "total") == 3


async def test_on_postgres(tidings_postgres):
    tidings_postgres(app)
    await app.invoke(Deposit(4))
    await app.worker().drain()
    assert await app.get("ledger", "total") == 4


def test_the_app_has_its_own_store_back():
    assert app.store.path.endswith("never-written.db") and not app.is_open


def test_given_when_then(tidings_given):
    tidings_given(account, [Deposited(1)]).when(Deposit(2)).then([Deposited(2)])
"""


def test_a_fresh_test_file_uses_the_fixtures_with_no_configuration(
    pytester: pytest.Pytester, postgres_url: str
) -> None:
    pytester.makepyfile(bank=APP, test_bank=TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "tidings.testing.pytest_plugin", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=5)
    assert not (pytester.path / "never-written.db").exists()


def test_loading_the_plugin_twice_is_harmless(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(bank=APP, test_bank=TESTS.split("async def test_on_sqlite")[0])
    result = pytester.runpytest_subprocess(
        "-p", "tidings.testing.pytest_plugin", "-p", "tidings.testing.pytest_plugin"
    )
    result.assert_outcomes(passed=1)
