"""Keys: the vault that seals secrets with the master key, and the SSH certificate authority."""
