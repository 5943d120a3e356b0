"""Routing, intake, relay: the hub as an ISO 18626 broker over RabbitMQ."""
