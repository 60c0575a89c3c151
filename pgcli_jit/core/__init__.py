"""Pure values and rules: leases, policy, durations, time, limits, safe text and errors."""
