"""Gatepass broker: the control plane and the only owner of the database."""
