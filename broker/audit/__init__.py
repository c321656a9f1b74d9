"""Audit and SIEM: the hash-chained trail, recorded refusals, and the SIEM renderings and forwarder."""
