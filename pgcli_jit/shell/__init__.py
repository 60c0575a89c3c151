"""The pgcli adapter: the only package that imports pgcli, pgspecial or prompt_toolkit."""
