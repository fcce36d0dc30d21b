"""The language between services: envelope, versioned messages, registry, upcasters.

Importing this package registers every message, so `decode_message` knows all of them.
"""

from contracts.base import Command, Event, Message, Money, OrderLine, SagaStyle
from contracts.envelope import Envelope
from contracts.errors import (
    ContractError,
    InvalidBody,
    InvalidEnvelope,
    UnknownContractVersion,
    UnknownMessageType,
)
from contracts.inventory import (
    ReleaseStock,
    ReserveStock,
    StockReleased,
    StockReservationFailed,
    StockReserved,
)
from contracts.orders import (
    V1_CURRENCY,
    ConfirmOrder,
    OrderConfirmed,
    OrderLineV1,
    OrderPlaced,
    OrderPlacedV1,
    OrderPlacedV2,
    OrderRejected,
    PlaceOrder,
    RejectOrder,
)
from contracts.payment import (
    ChargePayment,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    RefundPayment,
)
from contracts.registry import Registry, decode_message, encode_message, registry
from contracts.shipping import (
    CancelShipment,
    CreateShipment,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentFailed,
)

__all__ = [
    "V1_CURRENCY",
    "CancelShipment",
    "ChargePayment",
    "Command",
    "ConfirmOrder",
    "ContractError",
    "CreateShipment",
    "Envelope",
    "Event",
    "InvalidBody",
    "InvalidEnvelope",
    "Message",
    "Money",
    "OrderConfirmed",
    "OrderLine",
    "OrderLineV1",
    "OrderPlaced",
    "OrderPlacedV1",
    "OrderPlacedV2",
    "OrderRejected",
    "PaymentCompleted",
    "PaymentFailed",
    "PaymentRefunded",
    "PlaceOrder",
    "RefundPayment",
    "Registry",
    "RejectOrder",
    "ReleaseStock",
    "ReserveStock",
    "SagaStyle",
    "ShipmentCancelled",
    "ShipmentCreated",
    "ShipmentFailed",
    "StockReleased",
    "StockReservationFailed",
    "StockReserved",
    "UnknownContractVersion",
    "UnknownMessageType",
    "decode_message",
    "encode_message",
    "registry",
]
