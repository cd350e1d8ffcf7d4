"""Each rule of the advisor on a small App made to trigger it, and on one that does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tidings.errors import ConfigurationError
from tidings.topology import allow, check, load_config
from tidings.topology.rules import reads_as_fact, reads_as_order

MakeModule = Callable[[str], ModuleType]

# A shop with no finding: every command is asked for and handled, every event published and
# subscribed to, failures are routed, and the subscriber writes only through ctx.
SHOP = """
class PlaceOrder(Command):
    order_id: str

class OrderPlaced(Event):
    order_id: str

class ShipOrder(Command):
    order_id: str

class OrderShipped(Event):
    order_id: str

app = App("shop")
app.on_alert(print)

@app.command
async def place_order(cmd: PlaceOrder, ctx: Context) -> None:
    ctx.publish(OrderPlaced(order_id=cmd.order_id))

@app.command
async def ship_order(cmd: ShipOrder, ctx: Context) -> None:
    ctx.publish(OrderShipped(order_id=cmd.order_id))

shipping = Workflow("shipping", state=dict, key=lambda e: e.order_id)

@shipping.on(OrderPlaced, starts=True)
def placed(state: dict, event: OrderPlaced, step: Step) -> dict:
    step.send(ShipOrder(order_id=event.order_id))
    step.timeout("shipping", after=60)
    return state

@shipping.on(OrderShipped)
def shipped(state: dict, event: OrderShipped, step: Step) -> dict:
    step.complete()
    return state

app.workflow(shipping)

@app.subscriber("orders-page")
async def orders_page(event: OrderShipped, ctx: Context) -> None:
    ctx.put("orders", event.order_id, "shipped")

async def web_request(order_id: str) -> None:
    await app.invoke(PlaceOrder(order_id=order_id))
"""


def rules(module: object, **kw: object) -> list[str]:
    report = check(module.app, modules=[module], allowed=kw.get("allowed", {}))  # type: ignore[attr-defined]
    return [f.rule for f in report.shown]


def test_a_well_wired_app_has_no_finding(make_module: MakeModule) -> None:
    assert rules(make_module(SHOP)) == []


def test_td001_a_sent_command_nothing_handles(make_module: MakeModule) -> None:
    module = make_module(
        SHOP
        + """
class RefundOrder(Command):
    order_id: str

async def refund(order_id: str) -> None:
    await app.send(RefundOrder(order_id=order_id))
"""
    )
    report = check(module.app, modules=[module], allowed={})
    (finding,) = report.shown
    assert (finding.rule, finding.severity) == ("TD001", "error")
    assert "RefundOrder is sent" in finding.message
    assert finding.place is not None and finding.place.line == SHOP.count("\n") + 10
    assert report.failed()


def test_td001_a_registered_command_nothing_handles(make_module: MakeModule) -> None:
    module = make_module(SHOP + "\nclass Refund(Command):\n    id: str\n\napp.register(Refund)\n")
    assert rules(module) == ["TD001"]


def test_td002_a_handler_nobody_asks(make_module: MakeModule) -> None:
    cancel = """
class CancelOrder(Command):
    order_id: str

@app.command
async def cancel_order(cmd: CancelOrder, ctx: Context) -> None:
    ctx.put("orders", cmd.order_id, "cancelled")
"""
    assert rules(make_module(SHOP + cancel)) == ["TD002"]
    asked = cancel + "\nasync def ui() -> None:\n    await app.invoke(CancelOrder(order_id='1'))\n"
    assert rules(make_module(SHOP + asked)) == []


def test_td003_an_event_nobody_subscribes_to(make_module: MakeModule) -> None:
    module = make_module(
        SHOP.replace(
            "ctx.publish(OrderShipped(order_id=cmd.order_id))",
            "ctx.publish(OrderShipped(order_id=cmd.order_id))\n"
            "    ctx.publish(LabelPrinted(order_id=cmd.order_id))",
        )
        + "\nclass LabelPrinted(Event):\n    order_id: str\n"
    )
    report = check(module.app, modules=[module], allowed={})
    assert [(f.rule, f.severity) for f in report.shown] == [("TD003", "info")]
    assert not report.failed(strict=True)


def test_td004_a_subscriber_to_an_event_nobody_publishes(make_module: MakeModule) -> None:
    module = make_module(
        SHOP
        + """
class OrderRefunded(Event):
    order_id: str

@app.subscriber("refunds")
async def refunds(event: OrderRefunded, ctx: Context) -> None:
    ctx.put("refunds", event.order_id, True)
"""
    )
    assert rules(module) == ["TD004"]


def test_td005_a_subscriber_that_refuses(make_module: MakeModule) -> None:
    refusing = SHOP.replace(
        '    ctx.put("orders", event.order_id, "shipped")',
        '    if event.order_id == "0":\n        raise Refused("no order 0")\n'
        '    ctx.put("orders", event.order_id, "shipped")',
    )
    report = check(make_module(refusing).app, modules=[], allowed={})
    (finding,) = report.shown
    assert finding.rule == "TD005" and finding.severity == "error"
    assert "orders-page raises Refused" in finding.message


CRITICAL = """
class ReceiptRequested(Event):
    order_id: str

async def after_payment() -> None:
    await app.publish(ReceiptRequested(order_id="1"))

@app.subscriber("receipt", critical=True)
async def issue_receipt(event: ReceiptRequested, ctx: Context) -> None:
    ctx.put("receipts", event.order_id, "issued")
"""


def test_td006_one_critical_subscriber_is_a_command_in_disguise(make_module: MakeModule) -> None:
    report = check(make_module(SHOP + CRITICAL).app, modules=[], allowed={})
    (finding,) = report.shown
    assert (finding.rule, finding.severity) == ("TD006", "warning")
    assert "consider a command" in finding.message
    assert report.failed(strict=True) and not report.failed()


def test_td006_not_when_it_is_not_critical_or_not_alone(make_module: MakeModule) -> None:
    assert rules(make_module(SHOP + CRITICAL.replace(", critical=True", ""))) == []
    second = '\n@app.subscriber("stats")\nasync def stats(event: ReceiptRequested, ctx: Context) -> None:\n    ctx.put("stats", "receipts", 1)\n'
    assert rules(make_module(SHOP + CRITICAL + second)) == []


def test_td007_one_command_handled_by_two_apps_on_one_store(
    make_module: MakeModule, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_module(SHOP.replace('App("shop")', f'App("shop", store={url!r})'))
    second = make_module(
        SHOP.replace('App("shop")', f'App("warehouse", store={url!r})')
        .replace("PlaceOrder", "TakeOrder")
        .replace("class ShipOrder", "from " + first.__name__ + " import ShipOrder\nclass Unused")
    )
    report = check(first.app, second.app, modules=[first, second], allowed={})
    shared = [f for f in report.shown if f.rule == "TD007"]
    assert [f.severity for f in shared] == ["error"]
    assert "ShipOrder is handled in App 'shop'" in shared[0].message
    apart = make_module(SHOP.replace('App("shop")', 'App("warehouse", store="memory://")'))
    assert not [f for f in check(first.app, apart.app, allowed={}).shown if f.rule == "TD007"]


def test_td008_a_command_named_as_a_fact(make_module: MakeModule) -> None:
    module = make_module(SHOP.replace("ShipOrder", "OrderShippingRequested"))
    report = check(module.app, modules=[module], allowed={})
    assert [(f.rule, f.subjects[0]) for f in report.shown] == [("TD008", "OrderShippingRequested")]


def test_td009_an_event_named_as_an_order(make_module: MakeModule) -> None:
    module = make_module(SHOP.replace("OrderShipped", "ShipParcel"))
    assert rules(module) == ["TD009"]


def test_td010_a_sent_command_nobody_watches(make_module: MakeModule) -> None:
    unwatched = SHOP.replace("app.on_alert(print)\n", "")
    report = check(make_module(unwatched).app, modules=[], allowed={})
    assert [(f.rule, f.subjects[0]) for f in report.shown] == [("TD010", "ShipOrder")]
    watched = (
        unwatched
        + '\n@app.subscriber("failures")\nasync def failures(event: CommandFailed, ctx: Context)'
        ' -> None:\n    ctx.put("failures", event.command_id, event.error)\n'
    )
    assert rules(make_module(watched)) == []


CYCLE = """
class Charge(Command):
    order_id: str

class Charged(Event):
    order_id: str

@app.command
async def charge(cmd: Charge, ctx: Context) -> None:
    ctx.publish(Charged(order_id=cmd.order_id))

@app.subscriber("recharge")
async def recharge(event: Charged, ctx: Context) -> None:
    ctx.send(Charge(order_id=event.order_id))
"""


def test_td011_a_cycle_no_workflow_owns(make_module: MakeModule) -> None:
    report = check(make_module(SHOP + CYCLE).app, modules=[], allowed={})
    (finding,) = report.shown
    assert finding.rule == "TD011"
    assert "Charge → Charged → Charge" in finding.message


def test_td011_not_when_a_workflow_owns_it(make_module: MakeModule) -> None:
    owned = (
        CYCLE.split("@app.subscriber")[0]
        + """
billing = Workflow("billing", state=dict, key=lambda e: e.order_id)

@billing.on(Charged, starts=True)
def charged(state: dict, event: Charged, step: Step) -> dict:
    step.send(Charge(order_id=event.order_id))
    return state

app.workflow(billing)
"""
    )
    assert rules(make_module(SHOP + owned)) == []


def test_td012_a_subscriber_writing_outside_ctx(make_module: MakeModule) -> None:
    mailer = """
class Mailer:
    def send(self, to: str, key: str = "") -> None: ...

mailer = Mailer()

@app.subscriber("mail")
async def mail(event: OrderShipped, ctx: Context) -> None:
    mailer.send(event.order_id)
"""
    report = check(make_module(SHOP + mailer).app, modules=[], allowed={})
    assert [(f.rule, f.severity) for f in report.shown] == [("TD012", "info")]
    keyed = mailer.replace(
        "mailer.send(event.order_id)", "mailer.send(event.order_id, ctx.message_id)"
    )
    assert rules(make_module(SHOP + keyed)) == []


def test_allowed_in_code_on_a_type_or_a_handler(make_module: MakeModule) -> None:
    cancel = """
class CancelOrder(Command):
    order_id: str

@app.command
async def cancel_order(cmd: CancelOrder, ctx: Context) -> None:
    ctx.put("orders", cmd.order_id, "cancelled")
"""
    on_type = make_module(
        SHOP + cancel.replace("class CancelOrder", '@allow("TD002")\nclass CancelOrder')
    )
    report = check(on_type.app, modules=[on_type], allowed={})
    assert report.shown == [] and [f.suppressed for f in report.findings] == ["in code"]
    on_handler = make_module(SHOP + cancel.replace("@app.command", '@app.command\n@allow("TD002")'))
    assert rules(on_handler) == []
    other_rule = make_module(
        SHOP + cancel.replace("class CancelOrder", '@allow("TD003")\nclass CancelOrder')
    )
    assert rules(other_rule) == ["TD002"]


def test_allowed_in_pyproject(
    make_module: MakeModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = make_module(SHOP.replace("app.on_alert(print)\n", ""))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.tidings.check]\nallow = {TD010 = ["ShipOrder"]}\n'
    )
    (tmp_path / "service").mkdir()
    monkeypatch.chdir(tmp_path / "service")
    assert load_config() == {"TD010": ["ShipOrder"]}
    report = check(module.app, modules=[module])
    assert report.shown == [] and [f.suppressed for f in report.findings] == ["pyproject.toml"]
    assert rules(module, allowed={"TD010": ["*"]}) == []
    assert rules(module, allowed={"TD010": ["PlaceOrder"]}) == ["TD010"]


def test_bad_suppressions_say_how_to_write_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="rule id"):
        check(allowed={"ShipOrder": ["TD010"]})
    (tmp_path / "pyproject.toml").write_text(
        "[tool.tidings.check]\nallow = {TD010 = 'ShipOrder'}\n"
    )
    with pytest.raises(ConfigurationError, match=r"allow.TD010 lists type or handler names"):
        load_config(tmp_path)
    with pytest.raises(ConfigurationError, match="allow\\('TD002'\\)"):
        allow("no-handler")


@pytest.mark.parametrize(
    ("name", "fact"),
    [
        ("SeatReserved", True),
        ("OrderPlaced", True),
        ("PaymentSent", True),
        ("ReserveSeat", False),
        ("ProceedToCheckout", False),
        ("SendEmail", False),
        ("Confirm", False),
    ],
)
def test_a_fact_reads_in_the_past_tense(name: str, fact: bool) -> None:
    assert reads_as_fact(name) is fact


@pytest.mark.parametrize(
    ("name", "order"),
    [
        ("SendEmail", True),
        ("ReserveSeat", True),
        ("EmailSent", False),
        ("SeatReserved", False),
        ("Reservation", False),
        ("ReleaseSeatRequested", False),
    ],
)
def test_an_order_starts_with_an_imperative(name: str, order: bool) -> None:
    assert reads_as_order(name) is order


DECIDED = """
class OpenTab(Command):
    tab: str

class TabOpened(Event):
    tab: str

def decide(cmd: OpenTab, state: None) -> list[Event]:
    return [TabOpened(tab=cmd.tab)]

tabs = Decider(decide=decide, evolve=lambda s, e: s, initial=None, stream=lambda c: c.tab)
app.decider(tabs, OpenTab)

@app.subscriber("tabs-page")
async def tabs_page(event: TabOpened, ctx: Context) -> None:
    ctx.put("tabs", event.tab, "open")
"""


def test_a_decider_publishes_what_decide_returns_and_takes_allow(make_module: MakeModule) -> None:
    # TabOpened is published by decide (no TD004); nobody opens a tab (TD002).
    assert rules(make_module(SHOP + DECIDED)) == ["TD002"]
    allowed = DECIDED.replace("def decide", '@allow("TD002")\ndef decide')
    assert rules(make_module(SHOP + allowed)) == []
