"""Identity and sign-in: people, service accounts and AI agents; passwords, TOTP, throttles, web sessions."""
