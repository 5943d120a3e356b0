"""The hub core: intake (sharded), dispatch (routing, rota, relaying messages),
holdings, routing policy, the transaction state model."""
