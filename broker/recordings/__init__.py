"""Recordings, read side: the store the gateway writes to, asciicast v2 parsing, a terminal to replay them,
and the check of each recording against the hash its gateway reported (``gatepass audit verify``).

The gateway writes ``<session id>.cast`` (asciicast v2, https://docs.asciinema.org/manual/asciicast/v2/) and
reports its SHA-256 and size when the session ends; the broker keeps them on the session row and in the
``gateway:session:ended`` audit event. The audit event is hash-chained, the row is not: both are compared.
"""
