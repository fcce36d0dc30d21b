"""The payment's rules, with no servers: each decision and its exact replies, as values;
then properties of any sequence of them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import (
    ChargePayment,
    Money,
    OrderLine,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    RefundPayment,
    SagaStyle,
    ShipmentFailed,
    StockReserved,
)
from workers.payment import domain, store
from workers.payment.domain import (
    Account,
    Books,
    Charged,
    Movement,
    Payment,
    Refunded,
    Refused,
    TombstoneLeft,
)
from workers.runtime.decision import Decision, after
from workers.runtime.errors import PermanentError

ORDER = "6f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10"
PAYMENT_ID = domain.payment_id_for(ORDER)
# A payment id from before ids were derived (a random one): still what the order answers.
OLD_PAYMENT_ID = "7d9c3b8e-0b6a-4d3c-9d1f-2b9f6a1c0e11"
ITEMS = [OrderLine(sku="sku-a", quantity=2, unit_price=Money.of("6.25", "EUR"))]


def account(balance: str, currency: str = "EUR", customer_id: str = "c1") -> Account:
    return Account(customer_id, Decimal(balance), currency)


def books(*payments: Payment, accounts: tuple[Account, ...] = ()) -> Books:
    return Books(
        {payment.order_id: payment for payment in payments},
        {account.customer_id: account for account in accounts},
    )


def charge(
    amount: str = "12.50",
    *,
    order_id: str = ORDER,
    customer: str = "c1",
    currency: str = "EUR",
    saga: SagaStyle = "orchestration",
) -> ChargePayment:
    return ChargePayment(
        order_id=order_id,
        customer_id=customer,
        amount=Money.of(amount, currency),
        saga=saga,
        country="DE",
        items=ITEMS,
    )


def refund(order_id: str = ORDER, reason: str = "the saga compensates") -> RefundPayment:
    return RefundPayment(order_id=order_id, reason=reason, saga="orchestration")


def completed(
    request: ChargePayment | StockReserved, amount: str, currency: str = "EUR"
) -> PaymentCompleted:
    return PaymentCompleted(
        order_id=request.order_id,
        payment_id=PAYMENT_ID,
        amount=Money.of(amount, currency),
        saga=request.saga,
        country=request.country,
        items=request.items,
    )


def failed(reason: str) -> PaymentFailed:
    return PaymentFailed(order_id=ORDER, reason=reason, saga="orchestration")


def refunded(amount: str, currency: str = "EUR", payment_id: str = PAYMENT_ID) -> PaymentRefunded:
    return PaymentRefunded(
        order_id=ORDER,
        payment_id=payment_id,
        amount=Money.of(amount, currency),
        saga="orchestration",
    )


def payment(status: domain.Status, amount: str | None, reason: str | None = None) -> Payment:
    return Payment(
        ORDER,
        PAYMENT_ID,
        "c1",
        None if amount is None else Decimal(amount),
        "EUR",
        status,
        reason,
    )


# --- Charging: the decision and its reply, for every case. ----------------------------


def test_a_charge_the_balance_covers_is_taken_in_cents_under_the_order_s_payment_id() -> None:
    command = charge("12.5")
    decision = domain.charge_payment(books(accounts=(account("100.00"),)), command)
    assert decision == Decision(
        changes=(Charged(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR"),),
        send=(completed(command, "12.50"),),
    )
    end = after(books(accounts=(account("100.00"),)), decision.changes)
    assert end.accounts["c1"].balance == Decimal("87.50")


def test_the_whole_balance_can_be_charged() -> None:
    decision = domain.charge_payment(books(accounts=(account("12.50"),)), charge("12.50"))
    assert decision.changes == (Charged(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR"),)


@pytest.mark.parametrize(
    ("accounts", "command", "reason", "recorded"),
    [
        (
            (account("10.00"),),
            charge("10.01"),
            "insufficient funds: balance 10.00 EUR, charge 10.01 EUR",
            Decimal("10.01"),
        ),
        ((), charge("1.00", customer="nobody"), "unknown customer: nobody", Decimal("1.00")),
        (
            (account("100.00", "EUR"),),
            charge("1.00", currency="USD"),
            "currency mismatch: the charge is in USD, the account of c1 is in EUR",
            Decimal("1.00"),
        ),
        ((account("100.00"),), charge("0.005"), "invalid amount: 0.005 EUR", None),
        ((account("100.00"),), charge("-1.00"), "invalid amount: -1.00 EUR is negative", None),
        (
            (account("100.00"),),
            charge("1000000000000.00"),
            "invalid amount: 1000000000000.00 EUR",
            None,
        ),
    ],
)
def test_a_charge_that_cannot_be_paid_is_a_refusal_event_recorded_under_the_payment_id(
    accounts: tuple[Account, ...],
    command: ChargePayment,
    reason: str,
    recorded: Decimal | None,
) -> None:
    decision = domain.charge_payment(books(accounts=accounts), command)
    currency = command.amount.currency
    customer = command.customer_id
    assert decision == Decision(
        changes=(Refused(ORDER, PAYMENT_ID, customer, recorded, currency, reason),),
        send=(failed(reason),),
    )


@pytest.mark.parametrize(
    ("existing", "reply"),
    [
        # Charged before (even under a random id of old): the same answer, no second charge.
        (
            Payment(ORDER, OLD_PAYMENT_ID, "c1", Decimal("12.50"), "EUR", "charged", None),
            PaymentCompleted(
                order_id=ORDER,
                payment_id=OLD_PAYMENT_ID,
                amount=Money.of("12.50", "EUR"),
                saga="orchestration",
                country="DE",
                items=ITEMS,
            ),
        ),
        (payment("refused", "5.00", "insufficient"), failed("insufficient")),
        (payment("refunded", "3.00", "x"), failed(domain.ALREADY_REFUNDED)),
        (
            Payment(ORDER, PAYMENT_ID, None, None, None, "refunded", "stock released"),
            failed(domain.REFUNDED_BEFORE_CHARGED),
        ),
    ],
)
def test_asking_again_answers_as_recorded_and_changes_nothing(
    existing: Payment, reply: PaymentCompleted | PaymentFailed
) -> None:
    # Another amount and currency, and money enough: the recorded answer stands.
    rich = books(existing, accounts=(account("999.00", "USD"),))
    assert domain.charge_payment(rich, charge("99.00", currency="USD")) == Decision(send=(reply,))


def test_in_choreography_stock_reserved_charges_its_total_and_the_reply_says_choreography() -> None:
    reserved = StockReserved(
        order_id=ORDER,
        items=ITEMS,
        saga="choreography",
        customer_id="c1",
        total=Money.of("12.50", "EUR"),
        country="FR",
    )
    decision = domain.charge_payment(books(accounts=(account("20.00"),)), reserved)
    assert decision == Decision(
        changes=(Charged(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR"),),
        send=(completed(reserved, "12.50"),),
    )


# --- Refunding. ------------------------------------------------------------------------


def test_a_refund_gives_back_the_charge_once() -> None:
    charged = books(payment("charged", "12.50"), accounts=(account("87.50"),))
    decision = domain.refund_payment(charged, refund())
    assert decision == Decision(
        changes=(
            Refunded(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR", "the saga compensates"),
        ),
        send=(refunded("12.50"),),
    )
    assert after(charged, decision.changes).accounts["c1"].balance == Decimal("100.00")
    again = after(charged, decision.changes)
    assert domain.refund_payment(again, refund()) == Decision(send=(refunded("12.50"),))


def test_in_choreography_a_failed_shipment_refunds_and_says_why() -> None:
    charged = books(payment("charged", "12.50"), accounts=(account("0.00"),))
    event = ShipmentFailed(order_id=ORDER, reason="destination blocked", saga="choreography")
    decision = domain.refund_payment(charged, event)
    assert decision.changes == (
        Refunded(
            ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR", "shipment failed: destination blocked"
        ),
    )
    assert decision.send == (
        PaymentRefunded(
            order_id=ORDER,
            payment_id=PAYMENT_ID,
            amount=Money.of("12.50", "EUR"),
            saga="choreography",
        ),
    )


def test_a_refund_before_the_charge_leaves_a_tombstone_that_refuses_it() -> None:
    decision = domain.refund_payment(books(), refund(reason="stock released"))
    assert decision == Decision(
        changes=(TombstoneLeft(ORDER, PAYMENT_ID, "stock released"),),
        send=(refunded("0.00"),),
    )
    tombstone = after(books(accounts=(account("100.00"),)), decision.changes)
    assert tombstone.payments[ORDER].is_tombstone
    assert domain.charge_payment(tombstone, charge()) == Decision(
        send=(failed(domain.REFUNDED_BEFORE_CHARGED),)
    )
    # Asked again, the tombstone answers with its own id and a zero amount.
    assert domain.refund_payment(tombstone, refund()) == Decision(send=(refunded("0.00"),))


def test_a_refund_of_a_refused_charge_is_zero_in_the_order_s_currency() -> None:
    refused = Payment(ORDER, PAYMENT_ID, "c1", Decimal("5.00"), "USD", "refused", "insufficient")
    assert domain.refund_payment(books(refused), refund()) == Decision(
        send=(refunded("0.00", "USD"),)
    )


def test_a_refund_keeps_a_payment_id_of_old() -> None:
    old = Payment(ORDER, OLD_PAYMENT_ID, "c1", Decimal("1.00"), "EUR", "charged", None)
    decision = domain.refund_payment(books(old, accounts=(account("0.00"),)), refund())
    assert decision.send == (refunded("1.00", payment_id=OLD_PAYMENT_ID),)
    assert [change.payment_id for change in decision.changes] == [OLD_PAYMENT_ID]


def test_a_charge_to_a_customer_without_an_account_can_never_be_refunded() -> None:
    with pytest.raises(PermanentError, match="charged to c1, who has no account"):
        domain.refund_payment(books(payment("charged", "12.50")), refund())


def test_cents_keep_the_value_or_are_refused() -> None:
    assert domain.to_cents(Decimal("12.5")) == Decimal("12.50")
    assert domain.to_cents(Decimal("12.5000")) == Decimal("12.50")
    assert domain.to_cents(Decimal("12.501")) is None
    assert domain.to_cents(Decimal("1E+13")) is None
    assert str(domain.to_cents(Decimal("-0.00"))) == "0.00"


def test_a_payment_id_is_derived_from_the_order_id_alone() -> None:
    assert domain.payment_id_for(ORDER) == domain.payment_id_for(ORDER)
    assert domain.payment_id_for(ORDER) != domain.payment_id_for(ORDER.replace("6", "7"))
    # The namespace never changes: an order keeps its payment id from one release to the next.
    assert domain.payment_id_for(ORDER) == "a1f5aa4b-e057-5a3a-8f66-4987c7d8b4ef"


# --- What write stores: one row per order however many changes it had. ---------------


def test_a_batch_that_charges_and_refunds_one_order_writes_its_last_state_and_both_moves() -> None:
    rows = store.rows_of(
        [
            Charged(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR"),
            Refunded(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR", "refunded"),
            Charged("other", "p2", "c2", Decimal("3.00"), "EUR"),
            Refused("refused", "p3", "c1", None, "EUR", "invalid amount"),
            TombstoneLeft("tomb", "p4", "compensated"),
        ]
    )
    assert rows.payments == {
        ORDER: Payment(ORDER, PAYMENT_ID, "c1", Decimal("12.50"), "EUR", "refunded", "refunded"),
        "other": Payment("other", "p2", "c2", Decimal("3.00"), "EUR", "charged", None),
        "refused": Payment("refused", "p3", "c1", None, "EUR", "refused", "invalid amount"),
        "tomb": Payment("tomb", "p4", None, None, None, "refunded", "compensated"),
    }
    assert rows.deltas == {"c1": Decimal("0.00"), "c2": Decimal("-3.00")}
    assert rows.ledger == [
        Movement("c1", ORDER, "charge", Decimal("12.50")),
        Movement("c1", ORDER, "refund", Decimal("12.50")),
        Movement("c2", "other", "charge", Decimal("3.00")),
    ]


# --- Properties of any sequence of decisions. -----------------------------------------

CUSTOMERS = ("c1", "c2")
orders = st.sampled_from([f"{n}f1c1a3e-9a1c-4a43-9a49-7b0c5a9e1f10" for n in range(3)])
cents = st.integers(0, 10**6).map(lambda n: Decimal(n).scaleb(-2))
balances = st.fixed_dictionaries({customer: cents for customer in CUSTOMERS})
requests = st.lists(
    st.one_of(
        st.builds(
            lambda o, c, amount: charge(format(amount, "f"), order_id=o, customer=c),
            orders,
            st.sampled_from([*CUSTOMERS, "nobody"]),
            cents,
        ),
        st.builds(lambda o: refund(order_id=o), orders),
    ),
    max_size=12,
)


def opening(levels: dict[str, Decimal]) -> Books:
    return Books(accounts={c: Account(c, balance, "EUR") for c, balance in levels.items()})


def decide_all(
    state: Books, messages: list[ChargePayment | RefundPayment]
) -> list[Decision[domain.Change]]:
    """Each message decided on the state the decisions before it left, as in a batch."""
    decisions = []
    for message in messages:
        if isinstance(message, ChargePayment):
            decision = domain.charge_payment(state, message)
        else:
            decision = domain.refund_payment(state, message)
        state = after(state, decision.changes)
        decisions.append(decision)
    return decisions


@given(balances, requests)
def test_a_balance_never_goes_negative_and_moves_only_by_the_ledger(
    levels: dict[str, Decimal], messages: list[ChargePayment | RefundPayment]
) -> None:
    state = opening(levels)
    changes: list[domain.Change] = []
    for decision in decide_all(state, messages):
        state = after(state, decision.changes)
        changes += decision.changes
        assert all(account.balance >= 0 for account in state.accounts.values())
    # balance + charged - refunded = what there was; and write would move the same money.
    rows = store.rows_of(changes)
    for customer, level in levels.items():
        moved = sum((m.delta for m in rows.ledger if m.customer_id == customer), Decimal(0))
        assert level + moved == state.accounts[customer].balance
        assert level + rows.deltas.get(customer, Decimal(0)) == state.accounts[customer].balance


@given(balances, st.sampled_from(CUSTOMERS), orders, cents)
def test_a_charge_then_its_refund_restore_the_balance(
    levels: dict[str, Decimal], customer: str, order_id: str, amount: Decimal
) -> None:
    start = opening(levels)
    messages: list[ChargePayment | RefundPayment] = [
        charge(format(amount, "f"), order_id=order_id, customer=customer),
        refund(order_id=order_id),
    ]
    charged, given_back = decide_all(start, messages)
    assert isinstance(charged.send[0], PaymentCompleted) == (amount <= levels[customer])
    end = after(start, [*charged.changes, *given_back.changes])
    assert end.accounts == start.accounts


@given(balances, requests)
def test_an_order_is_charged_at_most_once_and_always_under_the_same_payment_id(
    levels: dict[str, Decimal], messages: list[ChargePayment | RefundPayment]
) -> None:
    decisions = decide_all(opening(levels), messages)
    changes = [change for decision in decisions for change in decision.changes]
    charged = [change.order_id for change in changes if isinstance(change, Charged)]
    assert len(charged) == len(set(charged))
    for decision in decisions:
        for reply in decision.send:
            assert isinstance(reply, PaymentCompleted | PaymentFailed | PaymentRefunded)
            if not isinstance(reply, PaymentFailed):
                assert reply.payment_id == domain.payment_id_for(reply.order_id)
    for change in changes:
        assert change.payment_id == domain.payment_id_for(change.order_id)
    # Every answer of an order's completed charge is the same answer.
    for order_id in set(charged):
        answers = {
            (reply.payment_id, reply.amount)
            for decision in decisions
            for reply in decision.send
            if isinstance(reply, PaymentCompleted) and reply.order_id == order_id
        }
        assert len(answers) == 1


@given(balances, requests)
def test_every_request_is_answered_once_and_a_tombstone_refuses_every_later_charge(
    levels: dict[str, Decimal], messages: list[ChargePayment | RefundPayment]
) -> None:
    decisions = decide_all(opening(levels), messages)
    refunded_first: set[str] = set()
    seen: set[str] = set()
    for message, decision in zip(messages, decisions, strict=True):
        assert len(decision.send) == 1  # every request gets its one answer
        (reply,) = decision.send
        if isinstance(message, RefundPayment):
            assert isinstance(reply, PaymentRefunded)
            if message.order_id not in seen:
                refunded_first.add(message.order_id)
                assert decision.changes == (
                    TombstoneLeft(
                        message.order_id,
                        domain.payment_id_for(message.order_id),
                        message.reason,
                    ),
                )
                assert reply.amount == Money.of("0.00", "EUR")
        elif message.order_id in refunded_first:
            assert decision.changes == ()
            assert reply == PaymentFailed(
                order_id=message.order_id,
                reason=domain.REFUNDED_BEFORE_CHARGED,
                saga=message.saga,
            )
        else:
            assert isinstance(reply, PaymentCompleted | PaymentFailed)
        seen.add(message.order_id)
