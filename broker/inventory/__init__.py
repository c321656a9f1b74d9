"""Inventory: sites (plants), their assets, and the gateways that reach them."""
