"""The benchmark: its method (run), backends (torch ones imported lazily), results, environment and report."""
