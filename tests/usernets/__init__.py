"""Networks a user would bring (`--arch usernets.tiny:build`), importable because pytest puts tests/ on the path."""
