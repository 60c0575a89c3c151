"""Leases at the import path backends use: :mod:`pgcli_jit.core.lease` defines them."""

from pgcli_jit.core.lease import Credentials, Lease

__all__ = ["Credentials", "Lease"]
