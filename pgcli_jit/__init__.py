"""pgcli-jit: just-in-time database credentials inside pgcli."""

__version__ = "0.1.0"
