"""One session's JIT life: leases, approvals, background jobs and what it says; no pgcli."""
