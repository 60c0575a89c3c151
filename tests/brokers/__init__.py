"""Small real brokers the command and http backend tests talk to."""
