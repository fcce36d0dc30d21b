"""The language between services: envelope, versioned messages, registry, upcasters.

Importing this package registers every message, so `decode_message` knows all of them.
"""

from contracts.base import Command, Event, Message, Money, OrderLine, SagaStyle
from contracts.envelope import Envelope, Received
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
from contracts.orchestrator import CompensateSaga, RetryStep
from contracts.orders import (
    V1_CURRENCY,
    ConfirmOrder,
    ConfirmOrderV1,
    ConfirmOrderV2,
    OrderConfirmed,
    OrderConfirmedV1,
    OrderConfirmedV2,
    OrderConfirmedV3,
    OrderEventsReplayed,
    OrderLineV1,
    OrderPlaced,
    OrderPlacedV1,
    OrderPlacedV2,
    OrderRejected,
    OrderRejectedV1,
    OrderRejectedV2,
    PlaceOrder,
    RejectOrder,
    ReplayOrderEvents,
)
from contracts.outgoing import OutgoingMessage, Send
from contracts.payment import (
    ChargePayment,
    PaymentCompleted,
    PaymentFailed,
    PaymentRefunded,
    RefundPayment,
)
from contracts.registry import Registry, decode_message, encode_message, registry
from contracts.sagas import command_or_choreography, not_choreography
from contracts.shipping import (
    CancelShipment,
    CreateShipment,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentCreatedV1,
    ShipmentCreatedV2,
    ShipmentFailed,
)

__all__ = [
    "V1_CURRENCY",
    "CancelShipment",
    "ChargePayment",
    "Command",
    "CompensateSaga",
    "ConfirmOrder",
    "ConfirmOrderV1",
    "ConfirmOrderV2",
    "ContractError",
    "CreateShipment",
    "Envelope",
    "Event",
    "InvalidBody",
    "InvalidEnvelope",
    "Message",
    "Money",
    "OrderConfirmed",
    "OrderConfirmedV1",
    "OrderConfirmedV2",
    "OrderConfirmedV3",
    "OrderEventsReplayed",
    "OrderLine",
    "OrderLineV1",
    "OrderPlaced",
    "OrderPlacedV1",
    "OrderPlacedV2",
    "OrderRejected",
    "OrderRejectedV1",
    "OrderRejectedV2",
    "OutgoingMessage",
    "PaymentCompleted",
    "PaymentFailed",
    "PaymentRefunded",
    "PlaceOrder",
    "Received",
    "RefundPayment",
    "Registry",
    "RejectOrder",
    "ReleaseStock",
    "ReplayOrderEvents",
    "ReserveStock",
    "RetryStep",
    "SagaStyle",
    "Send",
    "ShipmentCancelled",
    "ShipmentCreated",
    "ShipmentCreatedV1",
    "ShipmentCreatedV2",
    "ShipmentFailed",
    "StockReleased",
    "StockReservationFailed",
    "StockReserved",
    "UnknownContractVersion",
    "UnknownMessageType",
    "command_or_choreography",
    "decode_message",
    "encode_message",
    "not_choreography",
    "registry",
]
