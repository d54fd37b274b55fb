"""Worker runtime: handler registry, executor, leases, drain."""
