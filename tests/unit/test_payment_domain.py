"""The payment's rules, with no servers."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from workers.payment import domain
from workers.payment.domain import Account, Payment

PAYMENT_ID = "7d9c3b8e-0b6a-4d3c-9d1f-2b9f6a1c0e11"


def account(balance: str, currency: str = "EUR") -> Account:
    return Account("c1", Decimal(balance), currency)


def charged(amount: str, currency: str = "EUR") -> Payment:
    return Payment("o1", PAYMENT_ID, "c1", Decimal(amount), currency, "charged", None)


def test_a_charge_that_the_balance_covers_is_taken_in_cents() -> None:
    decision = domain.decide_charge(None, account("100.00"), "c1", Decimal("12.5"), "EUR")
    assert decision == domain.Charge(Decimal("12.50"), "EUR")
    assert isinstance(decision, domain.Charge)
    assert domain.balance_after(account("100.00"), decision) == Decimal("87.50")


def test_the_whole_balance_can_be_charged() -> None:
    decision = domain.decide_charge(None, account("12.50"), "c1", Decimal("12.50"), "EUR")
    assert decision == domain.Charge(Decimal("12.50"), "EUR")


def test_insufficient_funds_is_a_refusal_naming_balance_and_charge() -> None:
    decision = domain.decide_charge(None, account("10.00"), "c1", Decimal("10.01"), "EUR")
    assert decision == domain.Refuse(
        "insufficient funds: balance 10.00 EUR, charge 10.01 EUR", new=True, amount=Decimal("10.01")
    )


def test_an_unknown_customer_is_a_refusal() -> None:
    decision = domain.decide_charge(None, None, "nobody", Decimal("1.00"), "EUR")
    assert decision == domain.Refuse("unknown customer: nobody", new=True, amount=Decimal("1.00"))


def test_a_charge_in_another_currency_than_the_account_s_is_a_refusal() -> None:
    decision = domain.decide_charge(None, account("100.00", "EUR"), "c1", Decimal("1.00"), "USD")
    assert isinstance(decision, domain.Refuse) and decision.new
    assert decision.reason == "currency mismatch: the charge is in USD, the account of c1 is in EUR"


def test_an_amount_that_is_not_whole_cents_or_is_negative_is_a_refusal_with_no_amount() -> None:
    for amount in ("0.005", "-1.00", "1000000000000.00"):
        decision = domain.decide_charge(None, account("100.00"), "c1", Decimal(amount), "EUR")
        assert isinstance(decision, domain.Refuse) and decision.new, amount
        assert decision.reason.startswith("invalid amount: ") and decision.amount is None


def test_asking_again_answers_the_same_without_a_second_charge() -> None:
    decision = domain.decide_charge(charged("12.50"), account("0.00"), "c1", Decimal("99"), "USD")
    assert decision == domain.AlreadyCharged(PAYMENT_ID, Decimal("12.50"), "EUR")
    refused = Payment("o1", PAYMENT_ID, "c1", Decimal("5"), "EUR", "refused", "insufficient")
    decision = domain.decide_charge(refused, account("999.00"), "c1", Decimal("5"), "EUR")
    assert decision == domain.Refuse("insufficient", new=False)


def test_a_refund_before_the_charge_leaves_a_tombstone_that_refuses_it() -> None:
    assert domain.decide_refund(None) == domain.LeaveTombstone(Decimal("0.00"), "EUR")
    tombstone = Payment("o1", PAYMENT_ID, None, None, None, "refunded", "stock released")
    assert tombstone.is_tombstone
    decision = domain.decide_charge(tombstone, account("100.00"), "c1", Decimal("1"), "EUR")
    assert decision == domain.Refuse(domain.REFUNDED_BEFORE_CHARGED, new=False)
    # Asked again, the tombstone answers with its own id and a zero amount.
    assert domain.decide_refund(tombstone) == domain.NothingCharged(
        PAYMENT_ID, Decimal("0.00"), "EUR"
    )


def test_a_charge_after_its_refund_is_refused_not_charged_again() -> None:
    refunded = Payment("o1", PAYMENT_ID, "c1", Decimal("3.00"), "EUR", "refunded", "x")
    assert not refunded.is_tombstone
    decision = domain.decide_charge(refunded, account("100.00"), "c1", Decimal("3"), "EUR")
    assert decision == domain.Refuse(domain.ALREADY_REFUNDED, new=False)


def test_a_refund_gives_back_the_charge_once() -> None:
    assert domain.decide_refund(charged("12.50")) == domain.Refund(
        PAYMENT_ID, "c1", Decimal("12.50"), "EUR"
    )
    refunded = Payment("o1", PAYMENT_ID, "c1", Decimal("12.50"), "EUR", "refunded", "x")
    assert domain.decide_refund(refunded) == domain.AlreadyRefunded(
        PAYMENT_ID, Decimal("12.50"), "EUR"
    )


def test_a_refund_of_a_refused_charge_is_zero_in_the_order_s_currency() -> None:
    refused = Payment("o1", PAYMENT_ID, "c1", Decimal("5.00"), "USD", "refused", "insufficient")
    assert domain.decide_refund(refused) == domain.NothingCharged(
        PAYMENT_ID, Decimal("0.00"), "USD"
    )


def test_cents_keep_the_value_or_are_refused() -> None:
    assert domain.to_cents(Decimal("12.5")) == Decimal("12.50")
    assert domain.to_cents(Decimal("12.5000")) == Decimal("12.50")
    assert domain.to_cents(Decimal("12.501")) is None
    assert domain.to_cents(Decimal("1E+13")) is None


cents = st.integers(0, 10**12 - 1).map(lambda n: Decimal(n).scaleb(-2))
amounts = st.decimals(min_value=-10, max_value=10**6, places=4, allow_nan=False)


@given(cents, amounts)
def test_a_charge_never_takes_a_balance_below_zero(balance: Decimal, amount: Decimal) -> None:
    before = Account("c1", balance, "EUR")
    decision = domain.decide_charge(None, before, "c1", amount, "EUR")
    if isinstance(decision, domain.Charge):
        assert decision.amount == amount and decision.amount >= 0
        assert domain.balance_after(before, decision) >= 0
    else:
        assert isinstance(decision, domain.Refuse) and decision.new
        assert amount < 0 or amount > balance or domain.to_cents(amount) is None


@given(cents, cents)
def test_a_charge_then_its_refund_restore_the_balance(balance: Decimal, amount: Decimal) -> None:
    before = Account("c1", balance, "EUR")
    charge = domain.decide_charge(None, before, "c1", amount, "EUR")
    if not isinstance(charge, domain.Charge):
        assert amount > balance
        return
    after_charge = Account("c1", domain.balance_after(before, charge), "EUR")
    payment = Payment("o1", PAYMENT_ID, "c1", charge.amount, charge.currency, "charged", None)
    refund = domain.decide_refund(payment)
    assert isinstance(refund, domain.Refund)
    assert domain.balance_after(after_charge, refund) == balance
    # Asked again, after the refund: nothing more moves, either way.
    refunded = Payment("o1", PAYMENT_ID, "c1", charge.amount, "EUR", "refunded", "x")
    assert isinstance(domain.decide_refund(refunded), domain.AlreadyRefunded)
    assert isinstance(domain.decide_charge(refunded, before, "c1", amount, "EUR"), domain.Refuse)
