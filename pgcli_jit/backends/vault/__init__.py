"""The vault backend: dynamic database credentials from Vault or OpenBao."""

from pgcli_jit.backends.vault.backend import VaultBackend

__all__ = ["VaultBackend"]
