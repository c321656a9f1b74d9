"""The HTTP API (/api/v1): routes that parse, call one domain function and shape the answer; errors mapped once."""
