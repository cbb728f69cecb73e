"""registry-gate benchmark helpers; bench/run is the entry point."""
